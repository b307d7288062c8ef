"""Verilog generation: the netlist of a configured unit plus its JSON description."""

import json
import re

from amaranth import Shape, Value
from amaranth.back import verilog
from amaranth.lib import data, wiring

from base import __version__
from base.errors import KllmError
from base.files import write_files
from hdl.units import Unit

__all__ = ["DEFAULT_PREFIX", "check_prefix", "port_map", "generate", "emit"]


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


#: Prefix of every module name in a netlist unless the caller names another.
DEFAULT_PREFIX = "kllm_"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_prefix(prefix):
    """``prefix`` if it starts a plain Verilog identifier; else ``KllmError``."""
    if not isinstance(prefix, str) or not _IDENTIFIER.match(prefix):
        raise KllmError(f"module name prefix must be a Verilog identifier (a letter or _, "
                        f"then letters, digits, _), got {prefix!r}")
    return prefix


def generate(unit: Unit, config, *, prefix=DEFAULT_PREFIX):
    """``(verilog_text, description)`` for ``unit`` built with ``config``.

    Every module of the netlist, the helper modules included, is named with ``prefix``
    (the top ``<prefix><unit>``, its submodules ``<prefix><unit>.<path>``, the IMU's
    primitive wrappers ``<prefix><unit>_mul``, ``<prefix><unit>_bram``), so netlists of
    different units, or made with different prefixes, compile together in one design.
    """
    top = check_prefix(prefix) + unit.name
    component = unit.build(config)
    if hasattr(component, "module_name"):
        component.module_name = top
    text = verilog.convert(component, name=top, emit_src=False)
    # modules the netlist instantiates besides its own (e.g. a DSP wrapper), if any
    text += getattr(component, "verilog_extra", "")
    description = {
        "unit": unit.name,
        "toplevel": top,
        "generator": f"kllm-hdl {__version__}",
        "config": config.to_dict(),
        "latency": getattr(component, "latency", None),
        "ports": port_map(component),
    }
    return text, description


def emit(unit: Unit, config, out_dir, *, prefix=DEFAULT_PREFIX):
    """Generate and write ``<prefix><unit>.v`` and ``.json``; return their paths."""
    text, description = generate(unit, config, prefix=prefix)
    top = description["toplevel"]
    v, j = write_files(out_dir, {
        f"{top}.v": text,
        f"{top}.json": json.dumps(description, indent=2) + "\n",
    })
    return v, j
