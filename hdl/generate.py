"""Verilog generation: the netlist of a configured unit plus its JSON description."""

import json

from amaranth import Shape, Value
from amaranth.back import verilog
from amaranth.lib import data, wiring

from base import __version__
from base.files import write_files
from hdl.units import Unit

__all__ = ["port_map", "generate", "emit"]


def _fields(shape, prefix="", offset=0):
    """Leaf fields of a payload shape: ``[{name, offset, width, signed}]``."""
    if isinstance(shape, data.StructLayout):
        out = []
        for name, field in shape:
            out += _fields(field.shape, f"{prefix}.{name}" if prefix else name,
                           offset + field.offset)
        return out
    if isinstance(shape, data.ArrayLayout):
        out = []
        step = Shape.cast(shape.elem_shape).width
        for k in range(shape.length):
            out += _fields(shape.elem_shape, f"{prefix}[{k}]", offset + k * step)
        return out
    s = Shape.cast(shape)
    return [{"name": prefix, "offset": offset, "width": s.width, "signed": s.signed}]


def port_map(component: wiring.Component):
    """Every port of the component as named in the generated Verilog."""
    ports = []
    for path, member, value in component.signature.flatten(component):
        entry = {
            "name": "__".join(str(p) for p in path),
            "direction": "input" if member.flow == wiring.In else "output",
            "width": Value.cast(value).shape().width,
        }
        if isinstance(member.shape, data.Layout):
            entry["fields"] = _fields(member.shape)
        else:
            entry["signed"] = Value.cast(value).shape().signed
        ports.append(entry)
    ports += [{"name": "clk", "direction": "input", "width": 1},
              {"name": "rst", "direction": "input", "width": 1}]
    return ports


def generate(unit: Unit, config):
    """``(verilog_text, description)`` for ``unit`` built with ``config``."""
    component = unit.build(config)
    text = verilog.convert(component, name=unit.toplevel, emit_src=False)
    # modules the netlist instantiates besides its own (e.g. a DSP wrapper), if any
    text += getattr(component, "verilog_extra", "")
    description = {
        "unit": unit.name,
        "toplevel": unit.toplevel,
        "generator": f"kllm-hdl {__version__}",
        "config": config.to_dict(),
        "latency": getattr(component, "latency", None),
        "ports": port_map(component),
    }
    return text, description


def emit(unit: Unit, config, out_dir):
    """Generate and write ``<toplevel>.v`` and ``<toplevel>.json``; return their paths."""
    text, description = generate(unit, config)
    v, j = write_files(out_dir, {
        f"{unit.toplevel}.v": text,
        f"{unit.toplevel}.json": json.dumps(description, indent=2) + "\n",
    })
    return v, j
