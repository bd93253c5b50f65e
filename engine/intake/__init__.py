"""What comes in and goes out as bytes: media checks, the URL guard (SSRF), and storage."""
