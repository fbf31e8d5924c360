# One image for every tweetoscope command (stages, dashboard, Dask scheduler and workers).
# Build: docker build -t tweetoscope:0.1.0 .
# Dependencies are pinned by constraints.txt (kept by the project; see its header).

# ---- build stage: wheels for the package and its pinned dependencies
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md constraints.txt ./
COPY tweetoscope/ tweetoscope/
COPY streams/ streams/
COPY estimators/ estimators/
RUN pip install --constraint constraints.txt ".[k8s]"

# ---- final stage: the virtual environment only; no compiler, no build tools
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="tweetoscope" \
      org.opencontainers.image.description="Real-time retweet cascade forecasts: streamz + Kafka + Dask + Bokeh"
RUN groupadd --system --gid 10001 tweetoscope \
    && useradd --system --uid 10001 --gid tweetoscope --home-dir /home/tweetoscope --create-home tweetoscope
COPY --from=build /opt/venv /opt/venv
COPY --chown=tweetoscope:tweetoscope data/ /opt/tweetoscope/data/
COPY --chown=tweetoscope:tweetoscope dask-k8s/operator/ /opt/tweetoscope/dask-k8s/operator/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MPLCONFIGDIR=/tmp
WORKDIR /home/tweetoscope
USER 10001:10001
EXPOSE 5006 8080 8786 8787
# checkov:skip=CKV_DOCKER_2: one image runs several commands with different health checks; the
# Kubernetes manifests and docker-compose.yml probe each (stages: GET :8080/healthz and /readyz).
HEALTHCHECK NONE
ENTRYPOINT ["tweetoscope"]
CMD ["--help"]
