"""Open FPGA flow: Yosys + nextpnr (YoWASP builds from PyPI) on a pin-light harness."""
