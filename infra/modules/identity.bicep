// The Function App's user-assigned managed identity. It exists, and holds its roles (roles.bicep), before the
// app is created: Key Vault references, the registry image pull and identity-based host storage are resolved at
// the app's first start, which a system-assigned identity (born with the app, granted after it) cannot pass.
param location string
param identityName string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: tags
}

output identityId string = identity.id
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
output identityName string = identity.name
