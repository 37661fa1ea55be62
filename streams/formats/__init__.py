"""Container formats written by the media plane: fragmented MP4 for MSE viewers and recordings."""
