# The secured broker of docker compose: Mosquitto 2 with tacho's certificate pin plugin
# (broker/tacho_pins.c), which holds each device to the certificate it was registered with.
FROM alpine:3.20 AS build
RUN apk add --no-cache gcc musl-dev openssl-dev mosquitto-dev
COPY broker/tacho_pins.c /src/tacho_pins.c
RUN gcc -O2 -shared -fPIC -Wall -Wextra -Werror -o /src/tacho_pins.so /src/tacho_pins.c -lcrypto

FROM eclipse-mosquitto:2
COPY --from=build /src/tacho_pins.so /usr/lib/tacho_pins.so
