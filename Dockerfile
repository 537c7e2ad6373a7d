# syntax=docker/dockerfile:1
#
# The chat node as a container: built in a Rust image, run from a distroless one (glibc, CA
# certificates, no shell, no package manager) as a non-root user. The chat page is compiled
# into the binary, so the image holds two files of ours: `chat-server` and `chat-healthcheck`,
# the probe behind HEALTHCHECK (there is no curl to call).
#
#   docker build -t chat-server .
#   docker run --rm -p 8080:8080 chat-server          # one node, in-memory broker

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The caches keep downloaded crates and compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chat-server --bins \
 && mkdir -p /out \
 && cp target/release/chat-server target/release/chat-healthcheck /out/

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
# Reachable from outside the container; the probe reads the same variable.
ENV CHAT_LISTEN=0.0.0.0:8080
EXPOSE 8080
# The distroless "nonroot" user, by number so that runtimes can verify it is not root.
USER 65532:65532
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/chat-healthcheck"]
# SIGTERM starts the graceful shutdown: clients are closed with 1001 and reconnect elsewhere.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/chat-server"]
