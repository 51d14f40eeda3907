terraform {
  # terraform_data (built in since 1.4) is the only resource type: no provider to download.
  required_version = ">= 1.5"
}
