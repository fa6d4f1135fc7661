# Build: docker build -t tacho .
FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer: a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked && rm -rf src
COPY src ./src
COPY migrations ./migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/tacho --create-home tacho
COPY --from=build /src/target/release/tacho /usr/local/bin/tacho
USER tacho
# Run alone (no TACHO_DATABASE_URL), the image keeps its embedded store here: mount a volume.
WORKDIR /var/lib/tacho
ENV TACHO_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["tacho"]
CMD ["serve"]
