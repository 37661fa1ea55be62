"""WebRTC (WHEP) viewers: offers checked and answered, ICE, and the RTP fan-out to every session."""
