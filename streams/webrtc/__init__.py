"""WebRTC (WHEP) viewers: offers checked and answered, caps, ICE, and the RTP fan-out to every session."""
