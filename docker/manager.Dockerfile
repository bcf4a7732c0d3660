# tether-manager: a static (musl) binary in an empty image. Built by docker/build-images.sh,
# whose build context holds only the binary and the skeleton directories in rootfs/.
# No `# syntax=` line and no base image: building this needs no registry.
FROM scratch

ARG VERSION=0.0.0
ARG REVISION=unknown
ARG SOURCE=unknown
ARG CREATED=1970-01-01T00:00:00Z

LABEL org.opencontainers.image.title="tether-manager" \
      org.opencontainers.image.description="Tether manager: token store, admin API and delegate WebSocket endpoint on one TLS port" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0"

# /tmp (1777, root) for SQLite's temporary files; /data (database, master key, certificates)
# and /ca (where docker/up.sh publishes the CA certificate for the delegates) owned by the
# runtime user, so a fresh named volume mounted there inherits that owner.
COPY rootfs/ /
COPY --chown=65532:65532 empty/ /data/
COPY --chown=65532:65532 empty/ /ca/
COPY tether-manager /tether-manager

# Numeric user: a scratch image has no /etc/passwd.
USER 65532:65532
WORKDIR /data
ENV TETHER_DATA_DIR=/data \
    TETHER_LISTEN=0.0.0.0:8443
EXPOSE 8443
ENTRYPOINT ["/tether-manager"]
CMD ["serve"]
