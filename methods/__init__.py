"""Weight-quantization methods. One file per method; each registers itself by name.

``methods.base`` holds the interface and registry, ``methods.act`` the activation quantizers
shared by all methods. ``methods.base.load_all()`` imports every other module here.
"""
