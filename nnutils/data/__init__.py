"""Files and tables: images, decoding, downloads, the content cache, LUN pair CSVs, the embedded dataset."""
