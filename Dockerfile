# syntax=docker/dockerfile:1
#
# The Vestibule image: the release binary on a distroless base, run as a non-root user.
#
#   docker build -t ghcr.io/vestibule-dev/vestibule:0.1.0 .
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts below.

# --- build -----------------------------------------------------------------------------------
# Debian 12 (bookworm), like the runtime image: the binary links against that glibc.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target directories are cache mounts, kept between builds but not part of
# any layer; the binary is copied out of the target cache in the same step.
RUN --mount=type=cache,id=vestibule-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=vestibule-target,target=/src/target \
    cargo build --release --locked -p vestibule \
    && install -D -m 0755 target/release/vestibule /out/vestibule

# --- runtime ---------------------------------------------------------------------------------
# glibc, libgcc and CA certificates; no shell, no package manager. The nonroot variant's
# default user is 65532, named again below so the image is non-root whatever the base says.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="vestibule" \
      org.opencontainers.image.description="A Kubernetes Ingress controller" \
      org.opencontainers.image.source="https://github.com/vestibule-dev/vestibule" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/vestibule /usr/local/bin/vestibule
USER 65532:65532
# HTTP, HTTPS, admin (/healthz, /readyz, /debug/config). Unprivileged ports: no capability needed.
EXPOSE 8080 8443 10254
ENTRYPOINT ["/usr/local/bin/vestibule"]
CMD ["run"]
