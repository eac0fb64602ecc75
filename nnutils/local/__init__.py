"""Local features and the geometric check: SIFT/ORB keypoints, verification, DELF-style features."""
