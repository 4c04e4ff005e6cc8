// Key Vault for recovery credentials and the app's secret settings: RBAC authorisation, soft delete,
// purge protection, no public network access (reached through a private endpoint from the VNet).
param location string

@minLength(3)
@maxLength(24)
param vaultName string

@description('Tenant (Entra ID directory) of the vault.')
param tenantId string = subscription().tenantId

@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

param tags object = {}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: vaultName
  location: location
  tags: tags
  properties: {
    tenantId: tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForTemplateDeployment: false
    enabledForDiskEncryption: false
    publicNetworkAccess: 'Disabled'
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
    }
  }
}

output vaultId string = vault.id
output vaultName string = vault.name
output vaultUri string = vault.properties.vaultUri
