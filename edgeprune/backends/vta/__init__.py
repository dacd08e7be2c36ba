"""The VTA FPGA back end: configuration, instruction set, simulator (lowering comes on top of these)."""
