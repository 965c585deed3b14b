//! pcap / pcapng reader producing PacketEvents (Ethernet, Linux SLL/SLL2, raw IP).
