"""The VTA FPGA back end: configuration, instruction set, simulator, packing and layer lowering."""
