//! The bot's Markdown (private answers, reports) as HTML for the console, rendered with
//! pulldown-cmark. The text carries alert and user content, so nothing in it may become markup
//! of its own: raw HTML is turned into text (escaped like any text), links and images keep only
//! `http(s)` and relative targets, and images become links. Line breaks are kept as in chat.

use maud::{Markup, PreEscaped};
use pulldown_cmark::{CowStr, Event, HeadingLevel, LinkType, Options, Parser, Tag, TagEnd};

/// Only web links (and links within the console) are followed; `javascript:` and the like are
/// dropped.
fn safe_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://") || lower.starts_with('/')
}

/// Renders `md` to HTML that contains no markup from the text itself.
pub fn render(md: &str) -> Markup {
    render_shifted(md, 0)
}

/// `level` + `by`, at most `h6`.
fn shift(level: HeadingLevel, by: usize) -> HeadingLevel {
    HeadingLevel::try_from((level as usize + by).min(6)).unwrap_or(HeadingLevel::H6)
}

/// As [`render`], with headings `by` levels lower (a report's `#` inside a page's section).
pub fn render_shifted(md: &str, by: usize) -> Markup {
    let opts = Options::ENABLE_TABLES | Options::ENABLE_TASKLISTS | Options::ENABLE_STRIKETHROUGH;
    // Link and image targets that are not web links: their text stays, the link goes.
    let mut dropped_links: Vec<bool> = Vec::new();
    let events = Parser::new_ext(md, opts).filter_map(|ev| match ev {
        Event::Html(h) | Event::InlineHtml(h) => Some(Event::Text(h)),
        Event::SoftBreak => Some(Event::HardBreak),
        Event::Start(Tag::Heading {
            level,
            id,
            classes,
            attrs,
        }) => Some(Event::Start(Tag::Heading {
            level: shift(level, by),
            id,
            classes,
            attrs,
        })),
        Event::End(TagEnd::Heading(level)) => Some(Event::End(TagEnd::Heading(shift(level, by)))),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            let ok = safe_url(&dest_url) && link_type != LinkType::Email;
            dropped_links.push(!ok);
            ok.then_some(Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            }))
        }
        Event::End(TagEnd::Link) => {
            (!dropped_links.pop().unwrap_or(false)).then_some(Event::End(TagEnd::Link))
        }
        // An image would load from anywhere: show its target as a link instead.
        Event::Start(Tag::Image {
            dest_url, title, ..
        }) => {
            let ok = safe_url(&dest_url);
            dropped_links.push(!ok);
            ok.then_some(Event::Start(Tag::Link {
                link_type: LinkType::Inline,
                dest_url,
                title,
                id: CowStr::from(""),
            }))
        }
        Event::End(TagEnd::Image) => {
            (!dropped_links.pop().unwrap_or(false)).then_some(Event::End(TagEnd::Link))
        }
        other => Some(other),
    });
    let mut html = String::with_capacity(md.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events);
    PreEscaped(html)
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn code_lists_tables_and_emphasis() {
        let html =
            render("Run `restart` now.\n- **one**\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
                .into_string();
        assert!(html.contains("<code>restart</code>"), "{html}");
        assert!(!html.contains('`'), "{html}");
        assert!(html.contains("<li><strong>one</strong></li>"), "{html}");
        assert!(html.contains("<td>1</td>"), "{html}");
    }

    #[test]
    fn headings_shift() {
        let html = super::render_shifted("# Report\n\n## Facts\n\n###### deep", 2).into_string();
        assert!(html.contains("<h3>Report</h3>"), "{html}");
        assert!(html.contains("<h4>Facts</h4>"), "{html}");
        assert!(html.contains("<h6>deep</h6>"), "{html}");
    }

    #[test]
    fn lines_stay_lines() {
        let html = render("first line\nsecond line").into_string();
        assert!(html.contains("first line<br />"), "{html}");
    }

    #[test]
    fn raw_html_and_script_links_stay_text() {
        let html = render(
            "<script>alert(1)</script>\n\nTitle <img src=x onerror=alert(2)> \
             [click](javascript:alert(3)) ![i](javascript:alert(4)) [ok](https://example.com/?a=\"b\") \
             `<b>code</b>`",
        )
        .into_string();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(2)&gt;"),
            "{html}"
        );
        assert!(html.contains("click"), "{html}");
        assert!(
            html.contains("<a href=\"https://example.com/?a=%22b%22\">ok</a>"),
            "{html}"
        );
        assert!(
            html.contains("<code>&lt;b&gt;code&lt;/b&gt;</code>"),
            "{html}"
        );
    }
}
