# syntax=docker/dockerfile:1
# The node agent's image. Build from the repository root:
#   docker build -f deploy/images/agent.Dockerfile -t egress-recommender/agent:0.1.0 .
#
# The build stage is what `cargo xtask setup` does for the kernel programs: the nightly toolchain
# with rust-src (`-Z build-std=core` for bpfel-unknown-none) and bpf-linker built against that
# toolchain's own LLVM. The image holds the one binary (the kernel programs are embedded in it) on
# distroless glibc. It runs as root: Kubernetes grants a container's added capabilities (BPF,
# PERFMON, NET_ADMIN, SYS_ADMIN; deploy/base/agent.yaml) to uid 0 only, and it drops the rest.

FROM docker.io/library/rust:1.95-bookworm AS build
ARG BPF_LINKER_VERSION=0.13.0
RUN rustup toolchain install nightly --profile minimal --component rust-src
# bpf-linker's build looks for <prefix>/lib/libLLVM.so: point it at the nightly toolchain's LLVM.
RUN set -eu; \
    llvm="$(ls "$(rustc +nightly --print sysroot)"/lib/libLLVM.so.* | head -n1)"; \
    major="$(basename "$llvm" | sed -E 's/^libLLVM\.so\.([0-9]+).*/\1/')"; \
    mkdir -p /opt/llvm/lib; ln -s "$llvm" /opt/llvm/lib/libLLVM.so; \
    LLVM_PREFIX=/opt/llvm cargo +nightly install --locked bpf-linker \
        --version "$BPF_LINKER_VERSION" --no-default-features --features "llvm-$major"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=egress-agent-target \
    cargo build --release --locked -p agent \
    && install -D target/release/agent /out/agent

FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/agent /usr/local/bin/agent
ENTRYPOINT ["/usr/local/bin/agent"]
CMD ["run"]
