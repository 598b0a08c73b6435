"""PDUs from reassembled streams (sans-I/O framers) and Wireshark Lua dissector export."""
