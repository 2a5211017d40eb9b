# syntax=docker/dockerfile:1
# Build stage: dependencies are built from the manifests alone first, so source changes do not
# rebuild them; the binary is then built exactly as CI builds it (`cargo build --release --locked`).
# The stage runs on the platform it builds for: release.yml builds each architecture on a runner
# of that architecture, so no emulation and no cross toolchain is involved.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches examples && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && sed -i '/^\[\[bench\]\]/,/^$/d' Cargo.toml \
    && cargo build --release --locked --bin d1r2 || true
COPY . .
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin d1r2 \
    && cp target/release/d1r2 /d1r2

# Final stage: glibc, CA certificates and the binary; no shell, no package manager, no build
# tools. It runs as root, the image's default user, as GitHub requires of Docker actions: the
# runner mounts the workspace and the files behind GITHUB_OUTPUT and GITHUB_STEP_SUMMARY from its
# own user, and only root can write them from inside the container (so: no USER, no :nonroot).
FROM gcr.io/distroless/cc-debian12
COPY --from=build /d1r2 /usr/local/bin/d1r2
ENTRYPOINT ["/usr/local/bin/d1r2"]
