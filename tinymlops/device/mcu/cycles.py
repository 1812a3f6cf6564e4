"""Per-core cycle model: executed instructions, counted by class, -> core cycles.

Every figure comes from a published timing table (the source is next to it and in docs/firmware.md)
and none is fitted to any network's latency. Where a manual gives a range, the middle is taken and
the comment says so. What is charged per executed basic block:

  sum of the instructions' issue cycles (loads/stores next to each other pipeline on the M0+/M4/M33)
  + per taken control transfer: the pipeline refill P (and the flash wait states when the part
    fetches code without a cache)
  + per flash data line fetched (the emulator counts line misses of the flash data cache/buffer):
    the part's flash wait states.
"""

from __future__ import annotations

from dataclasses import dataclass

CLASSES = ("alu", "mul", "mac", "div", "load", "store", "ldm", "stm", "branch", "other")


@dataclass(frozen=True)
class CoreTiming:
    source: str
    alu: float
    mul: float
    mac: float
    div: float
    load: float  # a single load
    load_pipelined: float  # a load/store right after another load/store
    store: float
    multi_base: float  # LDM/STM/PUSH/POP: base + per register
    multi_per_reg: float
    branch: float  # a branch instruction itself (not taken, or before refill)
    refill: float  # extra cycles when a control transfer is taken
    load_byte: float = 0.0  # extra for sub-word loads (RV32 E31)


TIMINGS: dict[str, CoreTiming] = {
    # Arm Cortex-M0+ Technical Reference Manual r0p1 (DDI 0484C), 3.3 "Instruction set summary",
    # Table 3-1: data processing 1, MULS 1 (single-cycle multiplier), LDR/STR 2, LDM/STM/PUSH/POP 1+N,
    # B taken 2 / not taken 1, BL 3, BX/BLX 2 -> refill 1 (plus 1 more for BL, not modelled).
    "cortex-m0plus": CoreTiming(
        "Cortex-M0+ TRM (DDI 0484C) 3.3 Table 3-1",
        alu=1,
        mul=1,
        mac=1,
        div=1,
        load=2,
        load_pipelined=2,
        store=2,
        multi_base=1,
        multi_per_reg=1,
        branch=1,
        refill=1,
    ),
    # Arm Cortex-M4 Technical Reference Manual r0p1 (DDI 0439B), 3.3.1 "Cycle counts", Table 3-1:
    # ALU 1, MUL 1, MLA/MLS 2 (taken as mul 1; MLA is rare in our kernels), SMULL/SMLAL 1,
    # SMLAD/SMLABB etc. 1, SDIV/UDIV 2-12 (middle: 7), LDR 2 but 1 when pipelined with a neighbouring
    # load/store, STR 2 (1 pipelined), LDM/STM 1+N, B/BL/BX 1+P with P = 1..3 (middle: 2).
    "cortex-m4f": CoreTiming(
        "Cortex-M4 TRM (DDI 0439B) 3.3.1 Table 3-1",
        alu=1,
        mul=1,
        mac=1,
        div=7,
        load=2,
        load_pipelined=1,
        store=2,
        multi_base=1,
        multi_per_reg=1,
        branch=1,
        refill=2,
    ),
    # Arm Cortex-M33 Technical Reference Manual r0p4 (100230), 1.x "Processor pipeline": a 3-stage
    # ARMv8-M Mainline pipeline with the same single-cycle 32-bit multiplier and DSP MAC as the M4;
    # the M33 TRM does not tabulate cycle counts, so the M4 table (above) is used, as an
    # approximation, with SDIV 2..11 (middle: 6).
    "cortex-m33": CoreTiming(
        "Cortex-M4 TRM Table 3-1 applied to the M33 (M33 TRM 100230 publishes no table)",
        alu=1,
        mul=1,
        mac=1,
        div=6,
        load=2,
        load_pipelined=1,
        store=2,
        multi_base=1,
        multi_per_reg=1,
        branch=1,
        refill=2,
    ),
    # Arm Cortex-M7 Technical Reference Manual r1p2 (DDI 0489F), 1.x: 6-stage superscalar, dual
    # issue of two ALU instructions or ALU + load/store, one MAC pipe, branch target address cache.
    # No cycle table is published; documented approximation: ALU 0.5 (pairs), load/store 1
    # (one load/store pipe issuing alongside ALU work: 0.5 when adjacent), MAC/MUL 1, SDIV 2..12
    # (middle: 7), taken branches predicted by the BTAC: refill 1.
    "cortex-m7": CoreTiming(
        "Cortex-M7 TRM (DDI 0489F) 1.x pipeline description; approximation",
        alu=0.5,
        mul=1,
        mac=1,
        div=7,
        load=1,
        load_pipelined=0.5,
        store=1,
        multi_base=1,
        multi_per_reg=0.5,
        branch=0.5,
        refill=1,
    ),
    # No Espressif manual publishes ESP32-C3 instruction timings, so a documented RV32IMC core is
    # used: SiFive E31 Core Complex Manual (FE310-G000 manual v2p3, 3.2-3.3): single-issue 5-stage,
    # LW 2-cycle and LB/LH/LBU/LHU 3-cycle result latency (charged as if used next), MUL 5-cycle
    # latency, DIV 2..33 (middle: 17), correctly predicted branches free, mispredicted 3 cycles:
    # taken transfers charged 1 (a third of them mispredicted, assumption).
    "rv32imc": CoreTiming(
        "SiFive E31 Core Complex Manual (FE310-G000 v2p3) 3.2-3.3; approximation for the ESP32-C3",
        alu=1,
        mul=5,
        mac=5,
        div=17,
        load=2,
        load_pipelined=2,
        store=1,
        multi_base=1,
        multi_per_reg=1,
        branch=1,
        refill=1,
        load_byte=1,
    ),
}

# --- instruction classification ---------------------------------------------------------------
_ARM_MAC = ("smla", "smls", "smua", "smus", "smmla", "smmls", "umaal", "smlal", "umlal")
_ARM_MUL = ("mul", "mla", "mls", "smul", "umul", "smmul")


def classify_arm(mnemonic: str, op_str: str) -> tuple[str, int]:
    """(class, registers moved for ldm/stm)."""
    m = mnemonic.lower().split(".")[0]
    if m.startswith(("push", "stm")):
        return "stm", max(1, op_str.count(",") + 1)
    if m.startswith(("pop", "ldm")):
        return "ldm", max(1, op_str.count(",") + 1) + (2 if "pc" in op_str else 0)
    if m.startswith("ldrd") or m.startswith("strd"):
        return ("ldm" if m.startswith("l") else "stm"), 2
    if m.startswith("ldr") or m.startswith("ldab") or m.startswith("lda"):
        return ("branch" if op_str.startswith("pc") else "load"), 0
    if m.startswith("str") or m.startswith("stl"):
        return "store", 0
    if m.startswith(("sdiv", "udiv")):
        return "div", 0
    if m.startswith(_ARM_MAC):
        return "mac", 0
    if m.startswith(_ARM_MUL):
        return "mul", 0
    if m in ("b", "bl", "bx", "blx", "cbz", "cbnz", "tbb", "tbh") or (
        m.startswith("b") and len(m) in (3,) and m not in ("bic", "bfi", "bfc")
    ):
        return "branch", 0
    if m in ("nop", "it", "ite", "itt", "itte", "ittt", "itee", "itet", "ittee", "itete"):
        return "alu", 0
    return "alu", 0


def classify_riscv(mnemonic: str, op_str: str) -> tuple[str, int]:
    m = mnemonic.lower()
    if m.startswith("c."):
        m = m[2:]
    if m in ("lw", "lwsp"):
        return "load", 0
    if m in ("lb", "lbu", "lh", "lhu"):
        return "load", 1  # sub-word
    if m in ("sw", "swsp", "sb", "sh"):
        return "store", 0
    if m in ("mul", "mulh", "mulhu", "mulhsu"):
        return "mul", 0
    if m in ("div", "divu", "rem", "remu"):
        return "div", 0
    if m.startswith("b") or m in ("j", "jal", "jalr", "jr", "ret", "beqz", "bnez", "call", "tail"):
        return "branch", 0
    return "alu", 0


def block_cost(timing: CoreTiming, insns: list[tuple[str, int]]) -> float:
    """Issue cycles of one basic block (classes in order), without the taken-branch refill."""
    cycles = 0.0
    prev_mem = False
    for cls, n in insns:
        if cls == "load":
            cycles += (timing.load_pipelined if prev_mem else timing.load) + (timing.load_byte if n else 0)
        elif cls == "store":
            cycles += timing.load_pipelined if prev_mem else timing.store
        elif cls in ("ldm", "stm"):
            cycles += timing.multi_base + timing.multi_per_reg * n
        elif cls == "branch":
            cycles += timing.branch
        else:
            cycles += getattr(timing, cls if cls in ("alu", "mul", "mac", "div") else "alu")
        prev_mem = cls in ("load", "store")
    return cycles
