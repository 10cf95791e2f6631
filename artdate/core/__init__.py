"""The ground floor: settings and their options, works and their keys, storage URLs and S3 streams,
leases, HTTP, images, the Ray cluster connection and placement. Imports no other layer, and neither
torch nor Ray at import."""
