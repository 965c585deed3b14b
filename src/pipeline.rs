//! Wires the stages together: PacketEvent → flow → protocol → Exchange.
