# syntax=docker/dockerfile:1
# Oxbow: one image with the broker, the CLI and the three lab-booking services.
#   docker build -t oxbow .
# The base images are build arguments so that machines without a registry can use local stand-ins
# (see .ci/compose-test).
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
      --bin oxbow-broker --bin oxbow --bin booking-service --bin lab-service --bin data-service \
 && mkdir /out \
 && cp target/release/oxbow-broker target/release/oxbow target/release/booking-service \
       target/release/lab-service target/release/data-service /out/

FROM ${RUNTIME_IMAGE}
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/oxbow oxbow \
 && mkdir -p /var/lib/oxbow-secret && chown oxbow /var/lib/oxbow-secret
COPY --from=builder /out/ /usr/local/bin/
USER oxbow
WORKDIR /var/lib/oxbow
EXPOSE 9092 8080 8081 8082
CMD ["oxbow-broker", "--listen", "0.0.0.0:9092", "--data-dir", "/var/lib/oxbow/data"]
