# syntax=docker/dockerfile:1
# The signalling server in a small image: built with Rust's Debian image, run on
# debian:bookworm-slim (the same glibc) as a non-root user. README: "Run it in Docker".
#
#   docker build -t signalling .
#   docker run --rm -p 80:80 -p 8888:8888 -p 8889:8889 signalling
#   docker run ... -v ./signalling.toml:/etc/signalling/signalling.toml:ro \
#       signalling --config_file /etc/signalling/signalling.toml
#
# With no flags the server runs the embedded default configuration (signalling.toml): player
# port 80, streamer port 8888, SFU port 8889, logs to stderr (`docker logs`).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds; the binary is copied
# out of the mounted target/ so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p signalling \
    && install -D -m 0755 target/release/signalling /out/signalling

FROM debian:${DEBIAN_RELEASE}-slim
# A fixed uid/gid, so a mounted config can be made readable to it (chown 10001) and nothing in
# the image is writable by it except its working directory.
RUN groupadd --system --gid 10001 signalling \
    && useradd --system --uid 10001 --gid signalling --no-create-home \
       --home-dir /var/lib/signalling --shell /usr/sbin/nologin signalling \
    && install -d -o signalling -g signalling -m 0750 /var/lib/signalling \
    && install -d -m 0755 /etc/signalling
COPY --from=build /out/signalling /usr/local/bin/signalling
USER signalling:signalling
WORKDIR /var/lib/signalling
# Player (HTTP and WebSocket), streamer, SFU. Port 80 as non-root: Docker (20.10+) and Podman
# set net.ipv4.ip_unprivileged_port_start=0 in the container; elsewhere set it (compose.yaml
# does) or move the port with --player_port.
EXPOSE 80 8888 8889
# bash's /dev/tcp: the slim image has no curl or wget, and adding them for this would double
# the image's attack surface for one GET. /healthz answers 200 while the server serves.
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/80 && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/signalling"]
