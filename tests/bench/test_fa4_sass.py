"""bench/fa4_sass.py's reading of SASS: the key-block loop found among the kernel's loops (a made-up listing in
cuobjdump's format; the compile itself needs flash-attn-4 and is not run here)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import fa4_sass  # noqa: E402

LISTING = """
        code for sm_90a
        /*0000*/                   MOV R1, c[0x0][0x28] ;                         /* 0x00000a0000017a02 */
        /*0010*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], RZ ;  /* 0x0 */
        /*0020*/                   MUFU.EX2 R5, R5 ;                               /* 0x0 */
        /*0030*/                   SYNCS.PHASECHK.TRANS64 P0, [UR5], R2 ;          /* 0x0 */
        /*0040*/              @!P0 BRA 0x30 ;                                      /* 0x0 */
        /*0050*/                   HGMMA.64x64x16.F32.BF16 R88, R140, gdesc[UR12] ; /* 0x0 */
        /*0060*/                   FMNMX R7, R7, R8, !PT ;                         /* 0x0 */
        /*0070*/                   FFMA R8, R8, UR20, -R17 ;                       /* 0x0 */
        /*0080*/                   MUFU.EX2 R8, R8 ;                               /* 0x0 */
        /*0090*/               @P1 MUFU.EX2 R9, R9 ;                               /* 0x0 */
        /*00a0*/                   STL [R1], R9 ;                                  /* 0x0 */
        /*00b0*/               @P0 BRA 0x50 ;                                      /* 0x0 */
        /*00c0*/                   FMUL R10, R10, R11 ;                            /* 0x0 */
        /*00d0*/               @P2 BRA 0x10 ;                                      /* 0x0 */
        /*00e0*/                   EXIT ;                                          /* 0x0 */
        /*00f0*/                   SYNCS.ARRIVE R2 ;                               /* 0x0 */
        /*0100*/                   BRA 0x60 ;                                      /* 0x0 */
"""


def test_the_key_block_loop_is_the_smallest_loop_with_matrix_products_and_exponentials():
    code = fa4_sass.instructions(LISTING)
    assert len(code) == 17 and code[0] == (0, "MOV R1, c[0x0][0x28]")
    # the polling loop (0x30-0x40), the key-block loop (0x50-0xb0), the tile loop (0x10-0xd0); not the
    # unconditional jump back from out-of-line code at 0x100
    assert sorted(fa4_sass.loops(code)) == [(0x10, 0xD0), (0x30, 0x40), (0x50, 0xB0)]
    assert fa4_sass.key_block_loop(code) == (0x50, 0xB0)
    mix = fa4_sass.opcode_mix(code, (0x50, 0xB0))
    assert mix == {"HGMMA": 1, "FMNMX": 1, "FFMA": 1, "MUFU": 2, "STL": 1, "BRA": 1}  # predicated ones counted
    result = fa4_sass.report(LISTING)
    assert result["spills"] == 1 and result["key_block_loop"]["instructions"] == 7
