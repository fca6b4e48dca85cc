# syntax=docker/dockerfile:1
# The recommender's image. Build from the repository root:
#   docker build -f deploy/images/recommender.Dockerfile -t egress-recommender/recommender:0.1.0 .
#
# One binary on distroless glibc, as the non-root user 65532 (`nonroot`, the uid
# deploy/base/recommender.yaml runs it as). It needs no capability and writes only its store
# volume, so the root filesystem is mounted read-only.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=egress-recommender-target \
    cargo build --release --locked -p recommender --bin recommender \
    && install -D target/release/recommender /out/recommender

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/recommender /usr/local/bin/recommender
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/recommender"]
CMD ["serve", "--help"]
