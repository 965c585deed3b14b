//! Live capture: loads the TC program, attaches it with TCX, reads the RingBuf.
