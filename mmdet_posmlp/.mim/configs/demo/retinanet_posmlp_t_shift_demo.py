# RetinaNet + PosMLP-T with shifted windows on the synthetic shapes demo set:
# retinanet_posmlp_t_demo.py exactly (same data, schedule, neck, head, seed), with every second
# block of a stage on the window grid moved by half a window (backbone shift=True; no new
# parameters), so the two can be compared side by side.
#
#   python tools/make_demo_data.py
#   python tools/train.py configs/demo/retinanet_posmlp_t_shift_demo.py
_base_ = './retinanet_posmlp_t_demo.py'

model = dict(backbone=dict(shift=True))
