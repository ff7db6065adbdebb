"""DVC stage entry points (thin: argv -> config -> library -> atomic outputs)."""
