# Multi-stage build: a full Rust toolchain to compile, a small Debian runtime to run.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
# Cargo.toml names the load example and the criterion bench: the manifest is only complete
# with them (only the binary is built).
COPY examples ./examples
COPY benches ./benches
RUN cargo build --release --locked --bin incidentd

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/incidentd --create-home incidentd
COPY --from=build /src/target/release/incidentd /usr/local/bin/incidentd
COPY config /etc/incidentd
USER incidentd
WORKDIR /var/lib/incidentd
# Listening on 0.0.0.0, the web console needs a login: pass
#   -e INCIDENTD_CONSOLE_ADMIN_TOKEN=<at least 16 random characters>
# (or mount a config with [[console.users]]); without one it refuses to start.
ENV INCIDENTD_CONFIG=/etc/incidentd/incidentd.toml \
    INCIDENTD_LISTEN=0.0.0.0:8080 \
    INCIDENTD_STORE_PATH=/var/lib/incidentd/store
VOLUME ["/var/lib/incidentd"]
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/incidentd"]
CMD ["run"]
