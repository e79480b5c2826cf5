//! Classification report and confusion-matrix text (to be written).
