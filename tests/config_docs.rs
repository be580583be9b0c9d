//! Every key the config accepts is documented: in the annotated `config/incidentd.toml` or in
//! the docs (README.md, docs/). The keys come from the parser itself (its "expected one of"
//! list for an unknown key in each section), so a new key cannot go undocumented.

use incidentd::config::Config;

/// (where to put the probe key, a TOML snippet with `@` for it)
const SECTIONS: &[&str] = &[
    "@ = 1",
    "[server]\n@ = 1",
    "[store]\n@ = 1",
    "[webhooks]\n@ = 1",
    "[webhooks.alertmanager]\n@ = 1",
    "[engine]\n@ = 1",
    "[severity.P1]\n@ = 1",
    "[[kinds]]\n@ = 1",
    "[[rules]]\n@ = 1",
    "[[playbooks]]\n@ = 1",
    "[[playbooks]]\nid = 'a'\ntitle = 'A'\n[[playbooks.actions]]\n@ = 1",
    "[policy.P1]\n@ = 1",
    "[slack]\n@ = 1",
    "[discord]\n@ = 1",
    "[console]\n@ = 1",
    "[[console.users]]\n@ = 1",
    "[escalation]\n@ = 1",
    "[chat]\n@ = 1",
    "[followups]\n@ = 1",
    "[api]\n@ = 1",
    "[[api.tokens]]\n@ = 1",
    "[prometheus]\n@ = 1",
    "[[playbooks]]\nid = 'a'\ntitle = 'A'\n[[playbooks.evidence]]\n@ = 1",
];

fn keys_of(snippet: &str) -> Vec<String> {
    let text = snippet.replace('@', "zz_probe");
    let err = Config::from_toml(&text, &|_| None)
        .err()
        .unwrap_or_else(|| panic!("{text:?} should not parse"))
        .to_string();
    let line = err
        .lines()
        .find(|l| l.contains("unknown field `zz_probe`"))
        .unwrap_or_else(|| panic!("no unknown-field error for {text:?}: {err}"));
    let list = line
        .split("expected one of ")
        .nth(1)
        .or_else(|| line.split("expected ").nth(1))
        .unwrap_or_else(|| panic!("no key list in {line}"));
    list.split(',')
        .filter_map(|k| k.split('`').nth(1))
        .map(String::from)
        .collect()
}

fn docs() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut text = std::fs::read_to_string(format!("{root}/config/incidentd.toml")).unwrap();
    text += &std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    for e in std::fs::read_dir(format!("{root}/docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            text += &std::fs::read_to_string(p).unwrap();
        }
    }
    text
}

#[test]
fn every_config_key_is_documented() {
    let docs = docs();
    let mentioned = |key: &str| {
        docs.match_indices(key).any(|(i, _)| {
            let before = docs[..i].chars().next_back();
            let after = docs[i + key.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            !word(before) && !word(after)
        })
    };
    let mut missing = Vec::new();
    let mut total = 0;
    for s in SECTIONS {
        for key in keys_of(s) {
            total += 1;
            if !mentioned(&key) {
                missing.push(format!("{key} (in {:?})", s.lines().next().unwrap()));
            }
        }
    }
    assert!(total > 60, "only {total} keys found: the probe is broken");
    assert!(missing.is_empty(), "undocumented config keys: {missing:#?}");
}
