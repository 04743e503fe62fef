"""Weight-quantization methods. One file per method; each registers itself by name.

``methods.base`` holds the interface and registry, ``methods.act`` the activation quantizers
shared by all methods, ``methods._ops`` the quantizer primitives the methods share (sign with
sign(0) = +1, per-channel reshapes, straight-through sign and round), ``harness.errors`` the
UserError and ``require`` every option check uses. ``methods.base.load_all()`` imports every
other module here.
"""
