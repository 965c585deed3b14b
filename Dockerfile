# One image for both roles; the subcommand chooses: `cnflow agent` or `cnflow gateway`.
# Stage 1 builds the eBPF object (nightly + rust-src + bpf-linker) and the binary.
FROM rust:1.95-bookworm AS build
RUN rustup toolchain install nightly --profile minimal \
 && rustup component add rust-src --toolchain nightly \
 && cargo install bpf-linker --version 0.10.0 --locked \
 && apt-get update && apt-get install -y --no-install-recommends protobuf-compiler python3 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Profile-guided: an instrumented build replays the repository's captures and
# exports through a gateway, then the release build uses that profile (pgo.sh).
RUN bash pgo.sh \
 && strip target/release/cnflow

# Stage 2: a small runtime with glibc and CA roots only.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /src/target/release/cnflow /usr/local/bin/cnflow
EXPOSE 4317 4318 13133
ENTRYPOINT ["/usr/local/bin/cnflow"]
CMD ["run"]
