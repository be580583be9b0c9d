# Multi-stage build: a full Rust toolchain to compile, a small Debian runtime to run.
# Build from a clean checkout: docker build -t incidentd .
# (tests/deploy.rs checks that the files copied below make a complete crate.)
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
# Cargo.toml names the load example and the criterion bench: the manifest is only complete
# with them (only the binary is built).
COPY examples ./examples
COPY benches ./benches
ARG INCIDENTD_REVISION=unknown
ENV INCIDENTD_REVISION=${INCIDENTD_REVISION}
RUN cargo build --release --locked --bin incidentd

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/incidentd --create-home incidentd
COPY --from=build /src/target/release/incidentd /usr/local/bin/incidentd
COPY config /etc/incidentd
USER 10001:10001
WORKDIR /var/lib/incidentd
# Listening on 0.0.0.0, the web console needs a login: pass
#   -e INCIDENTD_CONSOLE_ADMIN_TOKEN=<at least 16 random characters>
# (or mount a config with [[console.users]]); without one it refuses to start.
# The only writable path is the store's volume: the image runs with --read-only.
ENV INCIDENTD_CONFIG=/etc/incidentd/incidentd.toml \
    INCIDENTD_LISTEN=0.0.0.0:8080 \
    INCIDENTD_STORE_PATH=/var/lib/incidentd/store
VOLUME ["/var/lib/incidentd"]
EXPOSE 8080
# No curl in the image: the binary asks its own /healthz.
HEALTHCHECK --interval=30s --timeout=6s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/incidentd", "health"]
ENTRYPOINT ["/usr/local/bin/incidentd"]
CMD ["run"]
