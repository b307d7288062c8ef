"""ECP5 vendor primitives of the IMU, in one place: the Verilog wrappers around them, the
Amaranth instances of those wrappers, and the plain-Amaranth equivalents that the Amaranth
simulator runs.

* ``kllm_imu_mul`` (:func:`dsp_mul`): a signed multiplier on one MULT18X18D with its operand
  and product registers;
* ``kllm_imu_bram`` (:func:`block_ram`): a memory of up to 1024 words on DP16KD block RAMs
  with their output registers.

Each wrapper module's Verilog (:func:`verilog_definitions`, appended to the netlist) has two
branches: Yosys (which defines ``SYNTHESIS``) gets the primitive, the simulators the same
registers in plain Verilog.  ``vendor=False`` builds the same registers in Amaranth instead of
an instance (for the Amaranth simulator, and for synthesis with every multiplier in LUTs).
"""

from amaranth import ClockSignal, Instance, Signal, signed, unsigned
from amaranth.lib import memory

__all__ = [
    "BRAM_DEPTH",
    "DSP_BITS",
    "block_ram",
    "dp16kd_verilog",
    "dsp_mul",
    "mult18x18d_verilog",
    "verilog_definitions",
]

# Operand width of the ECP5 MULT18X18D
DSP_BITS = 18


def mult18x18d_verilog():
    """Verilog of ``kllm_imu_mul``: a signed multiplier with its operands and its product
    registered (clock enable ``ce``), 2 cycles from operands to product.

    Yosys (which defines ``SYNTHESIS``) gets an ECP5 MULT18X18D with its input and output
    registers enabled: Yosys maps a ``*`` to a combinational MULT18X18D and keeps the
    registers around it in the fabric, and the fabric -> DSP -> fabric path then limits the
    clock.  The simulators get the same
    registers and product in plain Verilog.
    """
    a = ", ".join(f".A{k}(a18[{k}])" for k in range(18))
    b = ", ".join(f".B{k}(b18[{k}])" for k in range(18))
    pp = ", ".join(f".P{k}(p36[{k}])" for k in range(36))
    regs = ", ".join(f'.{r}_CLK("CLK0"), .{r}_CE("CE0"), .{r}_RST("RST0")'
                     for r in ("REG_INPUTA", "REG_INPUTB", "REG_OUTPUT"))
    return f"""
// kllm_imu_mul: p = a * b (signed), operands and product registered (enable ce).
// (No `signed` declarations: with them, Yosys 0.70's ABC9 step fails on this module.)
module kllm_imu_mul #(parameter AW = 18, parameter BW = 18) (
    input clk, input ce,
    input [AW-1:0] a, input [BW-1:0] b,
    output [AW+BW-1:0] p);
`ifdef SYNTHESIS
    wire [17:0] a18;
    wire [17:0] b18;
    wire [35:0] p36;
    generate
        if (AW < 18) assign a18 = {{{{(18-AW){{a[AW-1]}}}}, a}}; else assign a18 = a;
        if (BW < 18) assign b18 = {{{{(18-BW){{b[BW-1]}}}}, b}}; else assign b18 = b;
    endgenerate
    MULT18X18D #({regs},
        .GSR("DISABLED"), .RESETMODE("SYNC"), .SOURCEB_MODE("B_SHIFT"),
        .CLK0_DIV("ENABLED"), .CLK1_DIV("ENABLED"), .CLK2_DIV("ENABLED"),
        .CLK3_DIV("ENABLED")) dsp (
        {a},
        {b},
        .SIGNEDA(1'b1), .SIGNEDB(1'b1), .SOURCEA(1'b0), .SOURCEB(1'b0),
        .CLK0(clk), .CE0(ce), .RST0(1'b0),
        {pp});
    assign p = p36[AW+BW-1:0];
`else
    reg [AW-1:0] ar = 0;
    reg [BW-1:0] br = 0;
    reg [AW+BW-1:0] pr = 0;
    always @(posedge clk)
        if (ce) begin
            ar <= a;
            br <= b;
            pr <= $signed(ar) * $signed(br);
        end
    assign p = pr;
`endif
endmodule
"""


BRAM_DEPTH = 1024     # DP16KD as 1024 x 18


def dp16kd_verilog():
    """Verilog of ``kllm_imu_bram``: a DEPTH x DW memory (DEPTH <= 1024) with a read port A and
    a read/write port B, each read through two registers (the array's, then an output
    register): data two cycles after the address.  Port B's registers have enables (``b_ce``,
    ``b_oce``), so they serve as two stalling pipeline stages.

    Yosys gets ceil(DW / 18) ECP5 DP16KD (1024 x 18) with REGMODE OUTREG: the output register
    hides the array's 5.8 ns clock-to-out, which otherwise limits whatever follows the block
    RAM (Yosys's own mapping leaves REGMODE at NOREG).  Port wiring as in Yosys's
    brams_map_16kd.v (x18: address in ADx[13:4], byte enables in ADx[1:0]).  The simulators
    get the same registers in plain Verilog.
    """
    def ports(x, addr, din, dout, we, ce, oce):
        ad = ", ".join([f".AD{x}0(1'b1)", f".AD{x}1(1'b1)", f".AD{x}2(1'b0)", f".AD{x}3(1'b0)"]
                       + [f".AD{x}{k + 4}({addr}[{k}])" for k in range(10)])
        di = ", ".join(f".DI{x}{k}({din}[{k}])" for k in range(18))
        do = ", ".join(f".DO{x}{k}({dout}[{k}])" for k in range(18))
        return (f".CLK{x}(clk), .WE{x}({we}), .CE{x}({ce}), .OCE{x}({oce}), .RST{x}(1'b0), "
                f".CS{x}0(1'b0), .CS{x}1(1'b0), .CS{x}2(1'b0),\n            {ad},\n"
                f"            {di},\n            {do}")
    a = ports("A", "a10", "zero18", "da", "1'b0", "1'b1", "1'b1")
    b = ports("B", "b10", "dib", "db", "b_we", "b_ce | b_we", "b_oce")
    return f"""
// kllm_imu_bram: DEPTH x DW memory, read port A, read/write port B, two read registers each.
module kllm_imu_bram #(parameter AW = 10, parameter DW = 18, parameter DEPTH = 1024) (
    input clk,
    input [AW-1:0] a_addr, output [DW-1:0] a_dout,
    input [AW-1:0] b_addr, input b_we, input [DW-1:0] b_din, input b_ce, input b_oce,
    output [DW-1:0] b_dout);
`ifdef SYNTHESIS
    localparam NB = (DW + 17) / 18;
    wire [9:0] a10 = a_addr;
    wire [9:0] b10 = b_addr;
    wire [18*NB-1:0] din = b_din;
    wire [18*NB-1:0] douta, doutb;
    assign a_dout = douta[DW-1:0];
    assign b_dout = doutb[DW-1:0];
    genvar i;
    generate
        for (i = 0; i < NB; i = i + 1) begin : blk
            wire [17:0] dib = din[18*i +: 18];
            wire [17:0] zero18 = 18'b0;
            wire [17:0] da, db;
            assign douta[18*i +: 18] = da;
            assign doutb[18*i +: 18] = db;
            DP16KD #(.DATA_WIDTH_A(18), .DATA_WIDTH_B(18),
                .REGMODE_A("OUTREG"), .REGMODE_B("OUTREG"),
                .RESETMODE("SYNC"), .ASYNC_RESET_RELEASE("SYNC"),
                .CSDECODE_A("0b000"), .CSDECODE_B("0b000"),
                .CLKAMUX("CLKA"), .CLKBMUX("CLKB"),
                .WRITEMODE_A("NORMAL"), .WRITEMODE_B("NORMAL"), .GSR("DISABLED")) ram (
            {a},
            {b});
        end
    endgenerate
`else
    reg [DW-1:0] mem [0:DEPTH-1];
    reg [DW-1:0] a1 = 0, a2 = 0, b1 = 0, b2 = 0;
    integer k;
    initial for (k = 0; k < DEPTH; k = k + 1) mem[k] = 0;
    always @(posedge clk) begin
        a1 <= mem[a_addr];
        a2 <= a1;
        if (b_ce | b_we) b1 <= mem[b_addr];
        if (b_oce) b2 <= b1;
        if (b_we) mem[b_addr] <= b_din;
    end
    assign a_dout = a2;
    assign b_dout = b2;
`endif
endmodule
"""


def verilog_definitions(base="kllm_imu"):
    """Verilog of the wrapper modules the instances name: ``<base>_mul`` and ``<base>_bram``
    (``base`` the unit's top module: ``kllm_imu_mul`` and ``kllm_imu_bram`` for ``imu``)."""
    return (mult18x18d_verilog() + dp16kd_verilog()).replace("kllm_imu_", f"{base}_")


def dsp_mul(m, a, b, ce, name, *, vendor=True, base="kllm_imu"):
    """``a * b`` (signed) two enabled cycles later: operands registered, then the product.

    With ``vendor`` and both operands within 18 bits: one ``kllm_imu_mul`` instance (a
    MULT18X18D with its own registers), submodule ``name``; otherwise the same registers
    around a plain ``*``.  Returns the product, ``signed(len(a) + len(b))``.
    ``base``: the wrapper's module name is ``<base>_mul``.
    """
    aw, bw = len(a), len(b)
    p = Signal(signed(aw + bw), name=f"{name}_p", reset_less=True)
    if vendor and aw <= DSP_BITS and bw <= DSP_BITS:
        m.submodules[name] = Instance(f"{base}_mul", p_AW=aw, p_BW=bw,
                                      i_clk=ClockSignal(), i_ce=ce, i_a=a, i_b=b, o_p=p)
    else:
        ar = Signal(signed(aw), name=f"{name}_a", reset_less=True)
        br = Signal(signed(bw), name=f"{name}_b", reset_less=True)
        with m.If(ce):
            m.d.sync += [ar.eq(a), br.eq(b), p.eq(ar * br)]
    return p


def block_ram(m, name, *, depth, a_addr, a_data, b_addr, b_we, b_wdata, b_en, b_data,
              b_read=True, vendor=True, base="kllm_imu"):
    """A ``depth``-word memory, submodule ``name``, as wide as ``a_data``: read port A
    (``a_addr`` -> ``a_data``), read/write port B (``b_addr``, write ``b_wdata`` when
    ``b_we``, read -> ``b_data``).  Each read goes through two registers, data two cycles
    after the address; port B's two read registers advance when ``b_en`` (the first also
    on a write), so they serve as two stalling pipeline stages.

    With ``vendor`` and ``depth <= BRAM_DEPTH``: a ``kllm_imu_bram`` instance (DP16KD).
    Otherwise an Amaranth memory with the same registers (``b_read=False``: without port
    B's read, ``b_data`` left at 0).  ``base``: the wrapper's module name is
    ``<base>_bram``.
    """
    width = len(a_data)
    if vendor and depth <= BRAM_DEPTH:
        m.submodules[name] = Instance(
            f"{base}_bram", p_AW=len(a_addr), p_DW=width, p_DEPTH=depth,
            i_clk=ClockSignal(), i_a_addr=a_addr, o_a_dout=a_data, i_b_addr=b_addr,
            i_b_we=b_we, i_b_din=b_wdata, i_b_ce=b_en, i_b_oce=b_en, o_b_dout=b_data)
        return
    mem = memory.Memory(shape=unsigned(width), depth=depth, init=[])
    m.submodules[name] = mem
    rd = mem.read_port()
    wr = mem.write_port()
    m.d.comb += [rd.addr.eq(a_addr), wr.en.eq(b_we), wr.addr.eq(b_addr), wr.data.eq(b_wdata)]
    m.d.sync += a_data.eq(rd.data)
    if b_read:
        rd2 = mem.read_port()
        m.d.comb += [rd2.addr.eq(b_addr), rd2.en.eq(b_en | b_we)]
        with m.If(b_en):
            m.d.sync += b_data.eq(rd2.data)
