// A private DNS zone linked to the given virtual networks (private endpoints and VNet-integrated servers
// resolve through it).
@description('Zone name, e.g. privatelink.vaultcore.azure.net.')
param zoneName string

@description('Virtual networks to link the zone to.')
param vnetIds array

param tags object = {}

resource zone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: zoneName
  location: 'global'
  tags: tags
}

resource links 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (vnetId, i) in vnetIds: {
  parent: zone
  name: 'link-${i}-${uniqueString(vnetId)}'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnetId
    }
  }
}]

output zoneId string = zone.id
