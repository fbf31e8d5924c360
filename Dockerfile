# The image of every tweetoscope command (stages, dashboard, Dask scheduler and workers), and a
# variant for `tweetoscope cluster` with the Kubernetes clients (the project's [k8s] extra):
#   docker build -t tweetoscope:0.1.0 .                          # default target: stage
#   docker build --target k8s -t tweetoscope-k8s:0.1.0 .         # + dask-kubernetes, for `tweetoscope cluster`
# Runtime dependencies are pinned by constraints.txt, the build tools (pip, setuptools, wheel) by
# build-constraints.txt (PIP_CONSTRAINT). They are installed in layers of their own, from pyproject.toml
# and the constraints only, so a change of the sources rebuilds only the project's layers (seconds).
# Both images run as the non-root user 10001; data/ and the manifests are root-owned, read-only to it.
# BuildKit builds only the stages the target needs; the legacy builder builds them all (k8s included).

# The base image, pinned by digest. The default is the digest of the local stand-in for
# python:3.11-slim-bookworm (no image registry is reachable here; the stand-in is pushed through a local
# registry mirror). Where Docker Hub is reachable this must be the official image's digest:
#   docker pull python:3.11-slim-bookworm && docker image inspect -f '{{index .RepoDigests 0}}' python:3.11-slim-bookworm
# then set it here (or: docker build --build-arg BASE_DIGEST=sha256:... .).
ARG BASE_DIGEST=sha256:f5ef0087ea03da93d7bc7dd5bf3f98c0da338dd77bc5f4cf77cbed36cd9dbce6

# ---- deps: the pinned runtime dependencies in /opt/venv, installed by the pinned build tools of /opt/tools
# (pip --python), so that the runtime venv has no pip, setuptools or wheel
FROM python:3.11-slim-bookworm@${BASE_DIGEST} AS deps
WORKDIR /src
ENV PATH=/opt/venv/bin:/opt/tools/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONSTRAINT=/src/build-constraints.txt
# binutils for strip (below), in this build stage only: the final images copy /opt/venv alone.
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
COPY build-constraints.txt ./
RUN python -m venv /opt/tools \
    && /opt/tools/bin/pip install --upgrade pip setuptools wheel \
    && /opt/tools/bin/python -m venv --without-pip /opt/venv
# The project's dependencies (and, below, its [k8s] extra's), read from pyproject.toml: wheels only,
# so nothing is built from source; the tests the installed packages ship are removed (never imported
# at run time).
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
open('requirements.txt', 'w').write('\\n'.join(p['dependencies'])); \
open('requirements-k8s.txt', 'w').write('\\n'.join(p['optional-dependencies']['k8s']))" \
    && pip --python /opt/venv/bin/python install --only-binary :all: --constraint constraints.txt \
        --requirement requirements.txt \
    && pip --python /opt/venv/bin/python check \
    && find /opt/venv/lib/python3.11/site-packages -type d -name tests -prune -exec rm -rf {} +
# Files of the venv never used at run time, deleted here, before the final images copy /opt/venv
# (figures in BENCHMARKS.md, "The image"); the .py sources and their .pyc stay (start-up time):
# - the test suites shipped in directories named `test` (tornado's, joblib's; the `tests` ones are
#   removed above), never imported at run time, -3.6 MB
# - the optional parts of dependencies that cannot be imported here, their own requirements being absent:
#   dask.dataframe (pandas), -3.1 MB, confluent_kafka.schema_registry and .avro (their extras: certifi,
#   httpx2, urllib3, ...), -2.7 MB. Deleted only if their import fails with ModuleNotFoundError or
#   ImportError (so kept as soon as their requirements are installed); what else imports them does so
#   lazily (in try/except ImportError, or for dataframes and schema-registry serializers only).
# - the symbol tables of the shared objects (strip --strip-unneeded keeps the dynamic symbols that
#   Python, llvmlite, numba's JIT and the loader bind to), -33 MB: libllvmlite.so (numba's LLVM) 178.7 ->
#   159.8 MB, 14.5 MB in 178 others. Only the files auditwheel did not repair, and only if strip leaves
#   what the loader maps intact: strip corrupts the libraries patchelf rewrote (numpy's and numba's
#   thread pools broke when everything was stripped), so never the *.libs/ libraries nor the extension
#   modules with an RPATH or RUNPATH (patchelf set it, to reach *.libs/), and every other file is
#   stripped into a copy that replaces it only if its program headers and the bytes of every segment
#   are unchanged (the ELF header's section-table fields aside): numba's omppool and tbbpool,
#   patchelf-edited without an RPATH, fail that check and stay as they are ("not stripped" in the build
#   log). `mapped` prints those headers and a hash of each segment.
# - identical copies of a library in two *.libs/ directories (libgfortran and libquadmath, in numpy.libs
#   and scipy.libs) become hard links of one file (one copy in the layer), -3.1 MB: same file name, same
#   soname, so the loader already loads only one of them in a process
# - bokeh's non-minified bundles beside their .min.js (the server sends the .min.js, unless
#   BOKEH_MINIFIED=no or BOKEH_DEV=yes, which a deployment never sets), and its TypeScript compiler
#   with its declarations (for compiling custom extensions, with Node.js, absent here), -19 MB
# - C, C++ and Cython sources and headers, type stubs, source maps (for builds and type checkers;
#   numba's and the licences in *.dist-info kept), -6 MB
RUN cd /opt/venv/lib/python3.11/site-packages \
    && find . -type d -name test -not -path './*.dist-info/*' -prune -exec rm -rf {} + \
    && for m in dask.dataframe confluent_kafka.schema_registry confluent_kafka.avro; do \
        if python -c "import $m" 2>&1 | tail -n 1 | grep -qE '^(ModuleNotFound|Import)Error: '; then \
            echo "cannot be imported, deleted: $m" && rm -r "$(echo "$m" | tr . /)"; fi; \
    done \
    && mapped() { python -I -c "import hashlib, struct, sys; \
f = bytearray(open(sys.argv[1], 'rb').read()); assert f[:6] == bytes([127, 69, 76, 70, 2, 1]), 'not ELF64 LE'; \
f[40:48] = bytes(8); f[60:64] = bytes(4); \
off, n = struct.unpack_from('<Q', f, 32)[0], struct.unpack_from('<H', f, 56)[0]; \
ph = [struct.unpack_from('<IIQQQQQQ', f, off + 56 * i) for i in range(n)]; \
print(ph, [hashlib.sha256(f[p[2]:p[2] + p[5]]).hexdigest() for p in ph])" "$1"; } \
    && s=$(mktemp) && for f in $(find . -type f -name '*.so' -not -path './*.libs/*'); do \
        readelf -d "$f" | grep -qE '\((RPATH|RUNPATH)\)' && continue; \
        if strip --strip-unneeded -o "$s" "$f" && a=$(mapped "$f") && b=$(mapped "$s") && [ "$a" = "$b" ]; \
        then cat "$s" > "$f"; else echo "not stripped: $f"; fi; \
    done \
    && rm -f "$s" \
    && find . -path './*.libs/*' -type f -exec sha256sum {} + | sort | while read -r sum f; do \
        if [ "$sum" = "$last" ]; then ln -f "$first" "$f"; else last=$sum first=$f; fi; \
    done \
    && for f in bokeh/server/static/js/*.min.js; do rm -f "${f%.min.js}.js"; done \
    && rm -rf bokeh/server/static/js/compiler.js bokeh/server/static/js/lib bokeh/server/static/lib \
        numpy/_core/include \
    && find . -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.pyi' -o -name '*.c' \
        -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' -o -name '*.cu' -o -name '*.map' -o -name '*.d.ts' \) \
        -not -path './numba/*' -not -path './*.dist-info/*' -delete

# ---- deps-k8s: deps plus the [k8s] extra (dask-kubernetes, the Kubernetes clients)
FROM deps AS deps-k8s
RUN pip --python /opt/venv/bin/python install --only-binary :all: --constraint constraints.txt \
        --requirement requirements-k8s.txt \
    && pip --python /opt/venv/bin/python check \
    && find /opt/venv/lib/python3.11/site-packages -type d -name tests -prune -exec rm -rf {} +

# ---- project: the package alone, as a wheel built by the pinned setuptools and wheel of /opt/tools
# (--no-build-isolation), installed without its dependencies (--no-deps) for /opt/venv under /opt/project
# (--root), whose opt/venv the final images copy onto their /opt/venv. Its first layers are those of deps.
FROM python:3.11-slim-bookworm@${BASE_DIGEST} AS project
WORKDIR /src
ENV PATH=/opt/venv/bin:/opt/tools/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONSTRAINT=/src/build-constraints.txt
COPY build-constraints.txt ./
RUN python -m venv /opt/tools \
    && /opt/tools/bin/pip install --upgrade pip setuptools wheel \
    && /opt/tools/bin/python -m venv --without-pip /opt/venv
COPY pyproject.toml README.md ./
COPY tweetoscope/ tweetoscope/
COPY streams/ streams/
COPY estimators/ estimators/
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheel . \
    && pip --python /opt/venv/bin/python install --no-deps --no-warn-script-location --root /opt/project \
        /wheel/tweetoscope-*.whl

# ---- k8s: the stage image plus the Kubernetes clients, for `tweetoscope cluster` (--target k8s)
FROM python:3.11-slim-bookworm@${BASE_DIGEST} AS k8s
LABEL org.opencontainers.image.title="tweetoscope-k8s" \
      org.opencontainers.image.description="Real-time retweet cascade forecasts: streamz + Kafka + Dask + Bokeh; with dask-kubernetes"
RUN groupadd --system --gid 10001 tweetoscope \
    && useradd --system --uid 10001 --gid tweetoscope --home-dir /home/tweetoscope --create-home tweetoscope
COPY --from=deps-k8s /opt/venv /opt/venv
# Root-owned: the process (user 10001) only reads them.
COPY data/ /opt/tweetoscope/data/
COPY dask-k8s/operator/ /opt/tweetoscope/dask-k8s/operator/
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
# Last, so that a change of the sources rebuilds this layer only.
COPY --from=project /opt/project/ /

# ---- stage (the default target): every tweetoscope command but `tweetoscope cluster`, no Kubernetes clients
FROM python:3.11-slim-bookworm@${BASE_DIGEST} AS stage
LABEL org.opencontainers.image.title="tweetoscope" \
      org.opencontainers.image.description="Real-time retweet cascade forecasts: streamz + Kafka + Dask + Bokeh"
RUN groupadd --system --gid 10001 tweetoscope \
    && useradd --system --uid 10001 --gid tweetoscope --home-dir /home/tweetoscope --create-home tweetoscope
COPY --from=deps /opt/venv /opt/venv
# Root-owned: the process (user 10001) only reads them.
COPY data/ /opt/tweetoscope/data/
COPY dask-k8s/operator/ /opt/tweetoscope/dask-k8s/operator/
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
# Last, so that a change of the sources rebuilds this layer only.
COPY --from=project /opt/project/ /
