"""Every bad method option is a UserError naming the option, with a message that says the fix.

One table for all methods: unknown options, wrong types, values outside ``choices``, each
range and cross-option check of each method, and the checks that need the bit widths.
Each case goes through config resolution (``harness.config.build``), as a run would.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from harness import errors
from harness.cli import main
from harness.run import resolve
from methods.base import UserError, load_all
from methods.slb import load_fp_state

# (method, {option: value}, w_bits (None = the method's default), a_bits, field, message part)
BAD = [
    # --- every method: unknown option, unsupported weight bits
    ("fp", {"scaling": "channel"}, None, 32, "method.scaling", "known options: none"),
    ("dorefa", {"bits": 2}, None, 32, "method.bits", "unknown option; known options: none"),
    ("ste", {"scale": "layer"}, None, 32, "method.scale",
     "known options: clip, latent_clip, scaling"),
    ("lsq", {"init": 1}, None, 32, "method.init", "known options: grad_scale, granularity"),
    ("hashing", {"lambda": 0.1}, None, 32, "method.lambda", "known options: alpha, clip"),
    ("bop", {"lr": 1}, None, 32, "method.lr", "known options: gamma, gamma_decay"),
    ("lqnet", {"basis": 1}, None, 32, "method.basis", "known options: act_quant, delta, ema"),
    ("slb", {"temperature": 1}, None, 32, "method.temperature", "known options: allow_any_count"),
    ("fp", {}, 1, 32, "w_bits", "supports weight bits [32], not 1; pass --w-bits"),
    ("ste", {}, 2, 32, "w_bits", "supports weight bits [1], not 2; pass --w-bits"),
    ("dorefa", {}, 16, 32, "w_bits", "not 16; pass --w-bits"),
    ("hashing", {}, 2, 32, "w_bits", "supports weight bits [1], not 2"),
    ("bop", {}, 4, 32, "w_bits", "supports weight bits [1], not 4"),
    ("lqnet", {}, 5, 32, "w_bits", "supports weight bits [1, 2, 3, 4], not 5"),
    ("lsq", {}, 1, 32, "w_bits", "supports weight bits [2, 3, 4, 5, 6, 7, 8], not 1"),
    ("slb", {}, 9, 32, "w_bits", "not 9; pass --w-bits"),
    # --- wrong types (methods/options.py)
    ("ste", {"clip": "maybe"}, None, 32, "method.clip", "expected true or false, got 'maybe'"),
    ("ste", {"latent_clip": 1}, None, 32, "method.latent_clip", "expected true or false, got 1"),
    ("hashing", {"clip": "no"}, None, 32, "method.clip", "expected true or false, got 'no'"),
    ("slb", {"allow_any_count": "yes"}, None, 32, "method.allow_any_count",
     "expected true or false"),
    ("lsq", {"grad_scale": 2}, None, 32, "method.grad_scale", "expected true or false"),
    ("slb", {"t1": "big"}, None, 32, "method.t1", "expected a number, got 'big'"),
    ("slb", {"t0": True}, None, 32, "method.t0", "expected a number, got True"),
    ("slb", {"sbn_every": 1.5}, None, 32, "method.sbn_every", "expected an integer, got 1.5"),
    ("slb", {"init_from": 3}, None, 32, "method.init_from", "expected a string, got 3"),
    ("slb", {"candidates": 1}, None, 32, "method.candidates", "expected a list like [1, 2]"),
    ("bop", {"milestones": [1, "x"]}, None, 32, "method.milestones", "expected a number"),
    # --- values outside choices
    ("ste", {"scaling": "row"}, None, 32, "method.scaling",
     "'row' is not one of ['none', 'layer', 'channel']"),
    ("lsq", {"granularity": "group"}, 2, 32, "method.granularity",
     "'group' is not one of ['layer', 'channel']"),
    ("hashing", {"alpha": "max"}, None, 32, "method.alpha", "is not one of ['mean', 'learned']"),
    ("bop", {"scaling": "layer"}, None, 32, "method.scaling", "is not one of ['none', 'channel']"),
    ("bop", {"schedule": "cosine"}, None, 32, "method.schedule",
     "is not one of ['constant', 'step']"),
    ("lqnet", {"act_quant": "pact"}, None, 32, "method.act_quant",
     "is not one of ['recipe', 'lqnet']"),
    ("slb", {"init": "zeros"}, None, 32, "method.init", "is not one of ['random', 'from_fp']"),
    ("slb", {"schedule": "fast"}, None, 32, "method.schedule", "is not one of ['exp'"),
    ("slb", {"granularity": "batch"}, None, 32, "method.granularity",
     "is not one of ['epoch', 'step']"),
    ("slb", {"bn": "sync"}, None, 32, "method.bn", "is not one of ['sbn', 'recal_epoch'"),
    ("slb", {"recal_from": "start", "bn": "recal_epoch"}, None, 32, "method.recal_from",
     "is not one of ['window', 'first']"),
    ("slb", {"recal_from": "first"}, None, 32, "method.recal_from",
     "only read with method.bn=recal_epoch (got 'sbn')"),
    ("slb", {"hard_end": "soon"}, None, 32, "method.hard_end", "expected true or false"),
    # --- hashing ranges
    ("hashing", {"lam": -1}, None, 32, "method.lam", "must be >= 0 (0 = no quantization loss)"),
    ("hashing", {"entropy": -0.1}, None, 32, "method.entropy", "must be >= 0 (0 = off)"),
    ("hashing", {"entropy_temp": 0}, None, 32, "method.entropy_temp", "must be > 0, got 0"),
    # --- bop ranges and schedule/milestones
    ("bop", {"gamma": 0}, None, 32, "method.gamma", "must be in (0, 1] (larq: 1e-4)"),
    ("bop", {"gamma": 5}, None, 32, "method.gamma", "must be in (0, 1] (larq: 1e-4), got 5"),
    ("bop", {"tau": -1}, None, 32, "method.tau", "must be >= 0 (larq: 1e-8)"),
    ("bop", {"schedule": "step"}, None, 32, "method.milestones",
     "method.schedule=step needs epochs, e.g. --set method.milestones=[100,200]"),
    ("bop", {"milestones": [5]}, None, 32, "method.milestones",
     "only used with method.schedule=step; add --set method.schedule=step or drop"),
    ("bop", {"schedule": "step", "milestones": [5, 2]}, None, 32, "method.milestones",
     "must be increasing epochs, e.g. [100, 200]"),
    ("bop", {"gamma_decay": 0}, None, 32, "method.gamma_decay", "must be in (0, 1], got 0"),
    ("bop", {"gamma_decay": 1.5}, None, 32, "method.gamma_decay", "must be in (0, 1]"),
    ("bop", {"tau_decay": 0}, None, 32, "method.tau_decay", "must be > 0, got 0"),
    # --- lqnet ranges and activations that need the bit widths
    ("lqnet", {"delta": -1}, None, 32, "method.delta", "must be >= 0 (paper: 1e-4)"),
    ("lqnet", {"delta": math.nan}, None, 32, "method.delta", "must be >= 0"),
    ("lqnet", {"ema": 1.0}, None, 32, "method.ema", "must be in [0, 1) (paper: 0.9)"),
    ("lqnet", {"ema": -0.1}, None, 32, "method.ema", "must be in [0, 1)"),
    ("lqnet", {"act_quant": "lqnet"}, 2, 1, "method.act_quant",
     "need --a-bits in 2..8 (ReLU networks), got 1; pass e.g. --a-bits 2 or drop"),
    ("lqnet", {"act_quant": "lqnet"}, 2, 32, "method.act_quant", "got 32; pass e.g. --a-bits 2"),
    # --- slb: candidates, alone and against w_bits
    ("slb", {"candidates": [0.5]}, None, 32, "method.candidates", "give at least 2 values"),
    ("slb", {"candidates": [-1, math.inf]}, None, 32, "method.candidates",
     "values must be finite"),
    ("slb", {"candidates": [1, -1]}, None, 32, "method.candidates",
     "values must be sorted and distinct, e.g. [-1.0, 1.0]"),
    ("slb", {"candidates": [-1, 0, 0, 1]}, 2, 32, "method.candidates",
     "sorted and distinct"),
    ("slb", {"candidates": [-1, 0, 1]}, 1, 32, "method.candidates",
     "3 values do not fit in 1 bit(s) (at most 2); pass --w-bits 2 or fewer values"),
    ("slb", {"candidates": [-1, 0, 1], "allow_any_count": True}, 1, 32, "method.candidates",
     "do not fit in 1 bit(s)"),
    ("slb", {"candidates": [-1, 0, 1]}, 2, 32, "method.candidates",
     "3 values at 2 bit(s), expected 4; give 4 values, change --w-bits, or set "
     "method.allow_any_count=true"),
    # --- slb: ranges and cross-option checks
    ("slb", {"init_std": 0}, None, 32, "method.init_std", "must be > 0, got 0"),
    ("slb", {"init_from": "/nonexistent.pt"}, None, 32, "method.init_from",
     "is only read with method.init=from_fp; add --set method.init=from_fp or drop it"),
    ("slb", {"init_from": "/nonexistent.pt", "init": "from_fp"}, None, 32, "method.init_from",
     "not found; pass a checkpoint.pt or state-dict file"),
    ("slb", {"t0": 0}, None, 32, "method.t0", "must be a positive number, got 0"),
    ("slb", {"t0": math.inf}, None, 32, "method.t0", "must be a positive number"),
    ("slb", {"t1": 0.5}, None, 32, "method.t1", "must be finite and >= method.t0 (1.0)"),
    ("slb", {"t1": math.inf}, None, 32, "method.t1", "must be finite"),
    ("slb", {"start": 1.5}, None, 32, "method.start", "must be a fraction in [0, 1]"),
    ("slb", {"end": 0.1}, None, 32, "method.end", "must be in [method.start, 1] = [0.3, 1]"),
    ("slb", {"factor": 0.9}, None, 32, "method.factor",
     "must be >= 1 (T rises), got 0.9; official values 1.03-1.06"),
    ("slb", {"factor": 1.05, "schedule": "cos"}, None, 32, "method.factor",
     "only used by method.schedule=exp (got 'cos'); drop it"),
    ("slb", {"sgdr_cycle": 0}, None, 32, "method.sgdr_cycle", "must be in (0, 1]"),
    ("slb", {"sgdr_mult": 0.5}, None, 32, "method.sgdr_mult", "must be >= 1, got 0.5"),
    ("slb", {"sbn_every": 0}, None, 32, "method.sbn_every", "must be >= 1, got 0"),
    ("slb", {"recal_batches": -1}, None, 32, "method.recal_batches",
     "must be >= 0 (0 = as many as the test set)"),
]


def _ids(case) -> str:
    method, options, w_bits, a_bits, field, _ = case
    opts = ",".join(f"{k}={v}" for k, v in options.items())
    return f"{method}[{opts}]@w{w_bits}a{a_bits}->{field}"


@pytest.mark.parametrize("method,options,w_bits,a_bits,field,message", BAD,
                         ids=[_ids(c) for c in BAD])
def test_bad_option_is_a_user_error_naming_it(method, options, w_bits, a_bits, field, message):
    flags = {"method": method, "w_bits": w_bits, "a_bits": a_bits,
             **{f"method.{k}": v for k, v in options.items()}}
    with pytest.raises(UserError) as e:
        resolve.build(flags=flags)
    assert e.value.field == field
    text = str(e.value)
    assert text.startswith(f"{field}: ") and "\n" not in text
    assert message in text, text


def where_to_add() -> str:
    """file:line of the closing bracket of BAD: where a new method's cases go."""
    lines = Path(__file__).read_text().splitlines()
    end = next(i for i in range(lines.index("BAD = ["), len(lines)) if lines[i] == "]")
    return f"tests/test_method_options.py:{end + 1}"


def test_the_table_covers_every_method_and_every_option():
    methods = load_all()
    at = where_to_add()
    for name in sorted(set(methods) - {case[0] for case in BAD}):
        pytest.fail(f"methods/{name}.py has no bad-option case: add a line per option to BAD "
                    f"before {at}, e.g. ({name!r}, {{'nosuch': 1}}, None, 32, 'method.nosuch', "
                    "'unknown option'),")
    for name in sorted({case[0] for case in BAD} - set(methods)):
        pytest.fail(f"BAD ({at}) has cases for {name!r}, which no methods/*.py registers: "
                    "remove them, or register the method")
    named = {(case[0], case[4].removeprefix("method.")) for case in BAD}
    for name, cls in methods.items():
        for option in cls.Options.__dataclass_fields__:
            # every option of every method has at least one bad value in the table
            assert (name, option) in named, (
                f"no bad-value case for {name} method.{option}: add one to BAD before {at}, "
                f"e.g. ({name!r}, {{{option!r}: <a bad value>}}, None, 32, 'method.{option}', "
                "'<part of its error message>'),")


def test_unknown_method():
    with pytest.raises(UserError) as e:
        resolve.build(flags={"method": "nope"})
    assert e.value.field == "method" and "choose one of" in str(e.value)


def test_unreadable_init_from_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read .*pass a checkpoint.pt") as e:
        load_fp_state(str(garbage))
    assert e.value.field == "method.init_from"
    listing = tmp_path / "list.pt"
    torch.save([1, 2], listing)
    with pytest.raises(UserError, match="holds no state dict; pass a checkpoint.pt") as e:
        load_fp_state(str(listing))
    assert e.value.field == "method.init_from"


def test_cli_prints_a_bad_option_in_one_line_and_exits_2(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "--method", "bop", "--set", "method.gamma=5", "--set", "progress=none",
               "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: method.gamma:"), err
    assert "must be in (0, 1]" in err
    assert not out.exists()


def test_every_bad_option_is_found_at_once(tmp_path, capsys):
    # a wrong type, an unknown option and a value outside the choices: three errors, one each
    bad = {"method.t0": "abc", "method.bnn": "sbn", "method.init": "zeros", "method.t1": 2.0}
    with pytest.raises(UserError) as e:
        resolve.build(flags={"method": "slb", **bad})
    assert [one.field for one in errors.each(e.value)] == ["method.t0", "method.bnn",
                                                          "method.init"]
    assert e.value.field == "method.t0" and "\n" not in str(e.value)
    out = tmp_path / "run"
    rc = main(["run", "--method", "slb", "--out", str(out)]
              + [f"--set={k}={v}" for k, v in bad.items()])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not out.exists()
    assert err == ["error: method.t0: expected a number, got 'abc'",
                   "error: method.bnn: unknown option (did you mean 'bn'?); known options: "
                   + ", ".join(sorted(load_all()["slb"].Options.__dataclass_fields__)),
                   "error: method.init: 'zeros' is not one of ['random', 'from_fp']"]
