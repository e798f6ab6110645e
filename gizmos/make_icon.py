"""Draws gizmos/VOID.png, the 24x24 toolbar icon (run once with numpy + OpenCV; not needed inside Nuke)."""
import os

import cv2
import numpy as np

S = 4  # supersampling for smooth edges
img = np.zeros((24 * S, 24 * S, 4), np.uint8)
cv2.circle(img, (12 * S, 12 * S), 10 * S, (60, 60, 60, 255), -1, cv2.LINE_AA)  # dark disc: the plate
cv2.circle(img, (12 * S, 12 * S), 10 * S, (235, 235, 235, 255), S, cv2.LINE_AA)
cv2.circle(img, (12 * S, 12 * S), 5 * S, (0, 0, 0, 0), -1, cv2.LINE_AA)  # the hole: the removed object
cv2.line(img, (5 * S, 19 * S), (19 * S, 5 * S), (40, 40, 230, 255), 2 * S, cv2.LINE_AA)  # red strike (BGR)
small = cv2.resize(img, (24, 24), interpolation=cv2.INTER_AREA)
cv2.imwrite(os.path.join(os.path.dirname(os.path.abspath(__file__)), "VOID.png"), small)
