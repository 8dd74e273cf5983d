# The build stage's image in the stack test (BUILDER_IMAGE): the base, this machine's CA bundle for pip,
# and a find-links folder: the CPU torch wheel for the CPU image (download.pytorch.org cannot be
# reached here), an empty folder for the CUDA image. Context: that folder.
ARG BASE_IMAGE=cotd-stack/base:bookworm
FROM ${BASE_IMAGE}
COPY . /opt/wheels/
ENV PIP_FIND_LINKS=/opt/wheels \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
