"""Local features and the geometric check: SIFT/ORB keypoints, verification, the dense alignment check, DELF-style features."""
