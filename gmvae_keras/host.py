"""This host's CPU, as the speed figures of a run or a tool record it."""

import platform


def cpu_info():
    """`(model name, {flag: present})` of this host's CPU, for the speed figures a run or a tool records.

    The flags say which figures the host can show: AVX-512 and AMX (bfloat16) change the speed a lot.
    """
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or None
    return model, {name: name in flags for name in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")}


def bfloat16_hardware(cpu_flags):
    """Whether the CPU computes bfloat16 in hardware (AMX or AVX-512 bfloat16 instructions of `cpu_info()[1]`)."""
    return bool(cpu_flags.get("amx_bf16") or cpu_flags.get("avx512_bf16"))
