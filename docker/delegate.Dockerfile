# tether-delegate: a static (musl) binary in an empty image. Built by docker/build-images.sh,
# whose build context holds only the binary and the skeleton directories in rootfs/.
# No `# syntax=` line and no base image: building this needs no registry.
FROM scratch

ARG VERSION=0.0.0
ARG REVISION=unknown
ARG SOURCE=unknown
ARG CREATED=1970-01-01T00:00:00Z

LABEL org.opencontainers.image.title="tether-delegate" \
      org.opencontainers.image.description="Tether delegate: authenticated session to the manager, self-replacing on token rotation" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0"

# /tmp (1777, root); /run/tether (runtime state) and /var/lib/tether-delegate (the
# ACCOUNT_SECRET_FILE volume) owned by the runtime user, so a fresh named volume mounted
# there inherits that owner and the delegate can rewrite the token file atomically.
COPY rootfs/ /
COPY --chown=65532:65532 empty/ /run/tether/
COPY --chown=65532:65532 empty/ /var/lib/tether-delegate/
COPY tether-delegate /tether-delegate

# Non-root by default. Docker self-replacement needs the Docker socket: give the container
# the socket's group (compose: group_add) or run it as root; see docker/README.md.
USER 65532:65532
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/tether-delegate", "health"]
ENTRYPOINT ["/tether-delegate"]
CMD ["run"]
