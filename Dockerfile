# Tokenfab image: the control plane, executor and agent (one image, chosen by the first argument:
# `tokenfab controlplane|executor|agent ...`). Built and pushed by the release pipeline:
#
#   docker build -t ghcr.io/tokenfab/tokenfab:0.1.0 .
#
# Vendor runtimes are not baked in: agents reach NVML through the NVIDIA container runtime and
# the Ascend, MetaX and Biren tools through the host paths the chart mounts; engines (vLLM and
# its vendor variants) run in the replicas' own images on the Ray nodes.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY tokenfab ./tokenfab
COPY controlplane ./controlplane
COPY agents ./agents
RUN python -m venv /opt/tokenfab \
 && /opt/tokenfab/bin/pip install --no-cache-dir -c requirements.lock .

FROM python:3.11-slim-bookworm
COPY --from=build /opt/tokenfab /opt/tokenfab
# a fixed non-root user (the chart's runAsUser); the root filesystem can be read-only: Tokenfab
# writes only to /tmp (an emptyDir in the chart)
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin tokenfab
USER 10001:10001
ENV PATH=/opt/tokenfab/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 50051 9464
ENTRYPOINT ["tokenfab"]
CMD ["controlplane", "--help"]
