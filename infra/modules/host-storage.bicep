// The Functions host's own storage account: AzureWebJobsStorage and the Durable task hub (Azure Storage
// provider, host.json `durableTask.storageProvider`). The app reaches it with its managed identity
// (AzureWebJobsStorage__accountName), so shared keys are off.
param location string

@minLength(3)
@maxLength(24)
param accountName string

@description('Subnet of the Function App (service endpoint) allowed through the firewall.')
param functionsSubnetId string

param tags object = {}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: accountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_ZRS'
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
      virtualNetworkRules: [
        {
          id: functionsSubnetId
          action: 'Allow'
        }
      ]
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

output accountId string = account.id
output accountName string = account.name
