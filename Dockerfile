# The issuer, the sidecar and the Kubernetes sidecar injector in one small image (docker-compose.yml, deploy/k8s).
# Not exercised by CI (its machine has no Docker engine; tests/e2e/compose.rs runs the
# compose topology from the binaries instead).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tessera-issuer -p tessera-sidecar -p tessera-injector

FROM debian:bookworm-slim
# curl: the compose healthchecks (GET /readyz). The directories are created here, owned by
# the service user, so that named volumes mounted on them start with that owner: the data
# directory, the bootstrap credentials the issuer writes for the sidecar and the demo
# application, the sidecar's socket and bundle cache.
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/tessera tessera \
 && mkdir -p /var/lib/tessera /var/lib/tessera-sidecar /run/tessera \
             /var/lib/tessera-credentials/sidecar /var/lib/tessera-credentials/demo-app \
 && chown tessera /var/lib/tessera /var/lib/tessera-sidecar /run/tessera \
             /var/lib/tessera-credentials/sidecar /var/lib/tessera-credentials/demo-app \
 && chmod 0700 /var/lib/tessera /var/lib/tessera-credentials/sidecar \
             /var/lib/tessera-credentials/demo-app
COPY --from=build /src/target/release/tessera-issuer /src/target/release/tessera-sidecar \
     /src/target/release/tessera-injector /usr/local/bin/
USER tessera
EXPOSE 50051 8080 9090 8443
CMD ["tessera-issuer", "serve"]
