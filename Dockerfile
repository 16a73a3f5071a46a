# The operator image for your own CI. It is assembled by scripts/image-rootfs.sh, the same
# script test/tools/build-images.sh uses for the image the tests run, so both hold the same
# files: the built app with its production dependencies, the Node.js 24 binary of the npm
# `node` package, jemalloc and the shared libraries they load; nothing else, no shell, user 65532.
#   docker build -t iot-tenant-operator:0.1.0 .
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates npm libjemalloc2 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY src ./src
COPY scripts/image-rootfs.sh ./scripts/
# Installs the pinned Node.js 24 (npm package `node`, whose install script fetches the binary
# package) and the toolchain; `prepare` builds dist/.
RUN npm ci --no-audit --no-fund && bash scripts/image-rootfs.sh operator /rootfs

FROM scratch
# Owned by root like every file of the image build-images.sh packs (npm leaves some files owned
# by the uids in the packages' tarballs).
COPY --from=build --chown=0:0 /rootfs /
USER 65532:65532
# jemalloc (image-rootfs.sh copies it) instead of glibc's malloc, which kept freed memory resident.
ENV LD_PRELOAD=/usr/local/lib/libjemalloc.so.2
WORKDIR /app
ENTRYPOINT ["/usr/local/bin/node", "/app/bin/iot-tenant-operator.js"]
CMD ["run"]
