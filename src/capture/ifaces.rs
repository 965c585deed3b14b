//! Network interfaces to capture on: explicit list or auto mode following netlink.
