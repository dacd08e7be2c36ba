# edgeprune on Debian 12 + Python 3.11 with the cross toolchains; `docker run IMAGE compile ...`.
FROM python:3.11-slim-bookworm
# The same Debian package list as tools/setup.sh (tests/test_setup_files.py keeps them in step).
COPY tools/apt-packages.txt /tmp/apt-packages.txt
RUN apt-get update \
 && sed -e 's/#.*//' -e '/^\s*$/d' /tmp/apt-packages.txt | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/edgeprune
COPY . .
RUN pip install --no-cache-dir ".[rpc,tflite,images,tune,serial]"
WORKDIR /work
ENTRYPOINT ["edgeprune"]
