# Simulated hall cameras: GStreamer's RTSP server with synthetic H.264 streams.
FROM debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp \
        gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly \
        gstreamer1.0-plugins-bad \
    && rm -rf /var/lib/apt/lists/*
COPY tests/gst_rtsp_server.py /usr/local/bin/rtsp-sim.py
EXPOSE 8554
ENTRYPOINT ["python3", "/usr/local/bin/rtsp-sim.py"]
